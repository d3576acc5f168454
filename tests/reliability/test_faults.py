"""Faults and races (issue 8): killed promotions, a restarted MLflow, killed compilers, concurrent promotions,
and the credentials the whole session ran with, searched for everywhere it wrote. Counted in the session's
closing reliability line; a committed version that is missing, changed or incomplete counts as lost."""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from conftest import SENTINEL_CREDENTIALS, wait_until

from devtools import services
from tasks.core.files import sha256_file, to_uri, tree_files, tree_sha256
from tasks.core.records import CompileConfig, CompiledArtifact, RunContext
from tasks.core.schema import TensorSpec
from tasks.core.settings import PROJECT_ROOT
from tasks.registry import client as registry_client
from tasks.serving.commit import CLAIMS, STAGING, Candidate, promote
from tasks.serving.store import MANIFEST, Store
from tasks.stages.compile_pipeline import record as record_stage
from tasks.stages.compile_pipeline import register as register_stage

pytestmark = [pytest.mark.reliability, pytest.mark.integration]
FORK = multiprocessing.get_context("fork")
SPEC = TensorSpec(name="input", shape=["batch", 4], dtype="float32")
# A Neuron inf1 SavedModel as TensorFlow Serving loads it: graph, variables, NEFF binaries
ARTIFACT_FILES = {
    "saved_model/saved_model.pb": 3000,
    "saved_model/variables/variables.index": 500,
    "saved_model/variables/variables.data-00000-of-00001": 200_000,
    "saved_model/neff/graph_0.neff": 50_000,
}


def artifact(root: Path, seed: str) -> CompiledArtifact:
    """A compiled artifact's directory: files of fixed sizes whose bytes depend on ``seed``."""
    for name, size in ARTIFACT_FILES.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        block = hashlib.sha256(f"{seed}/{name}".encode()).digest()
        path.write_bytes((block * (size // len(block) + 1))[:size])
    return CompiledArtifact(
        config=CompileConfig(target="neuron-inf1", precision="fp32", batch_size=1),
        status="ok",
        uri=to_uri(root),
        sha256=tree_sha256(root),
        files=tree_files(root),
        compiler="neuron-cc",
        compiler_version="1.24",
    )


def candidate(model: str, registry_version: str, compiled: CompiledArtifact) -> Candidate:
    return Candidate(model, registry_version, "run", compiled, [SPEC], [SPEC], "source-sha")


def audit(store: Store, graph_file: str = "saved_model.pb") -> tuple[dict[int, dict], list[str]]:
    """Committed versions, and every way a version is half-visible: a committed version whose files do not
    all match its manifest, or a directory holding the graph file (what a runtime loads) but not all files."""
    problems = []
    committed = store.committed()
    for number in store.version_numbers():
        keys = set(store.keys(f"{number}/"))
        if number in committed:
            for entry in committed[number]["files"]:
                key = store.root + f"{number}/{entry['path']}"
                body = store.client.get_object(Bucket=store.bucket, Key=key)["Body"].read()
                if hashlib.sha256(body).hexdigest() != entry["sha256"]:
                    problems.append(f"{number}/{entry['path']} does not match its manifest")
        elif f"{number}/{graph_file}" in keys:
            expected = {f"{number}/{name.removeprefix('saved_model/')}" for name in ARTIFACT_FILES}
            if not expected <= keys:
                problems.append(f"{number}/ holds the graph file without {sorted(expected - keys)}")
    return committed, problems


@contextlib.contextmanager
def s3_events(handlers: dict):
    """The S3 clients tasks.serving.store makes, with ``handlers`` registered on their botocore events."""
    import tasks.serving.store as promote_module

    made = promote_module.s3_client

    def client(settings_or_endpoint):
        s3 = made(settings_or_endpoint)
        for event, handler in handlers.items():
            s3.meta.events.register(event, handler)
        return s3

    promote_module.s3_client = client
    try:
        yield
    finally:
        promote_module.s3_client = made


def _promote_and_die(settings, cand: Candidate, call: int, when: str) -> None:
    """Child process: promote, SIGKILLed just before (or after) its ``call``-th S3 request."""
    calls = [0]

    def hook(event_name, **kwargs):
        if event_name.startswith("before-call"):
            calls[0] += 1
            if when == "before" and calls[0] == call:
                os.kill(os.getpid(), signal.SIGKILL)
        elif when == "after" and calls[0] == call:
            os.kill(os.getpid(), signal.SIGKILL)

    with s3_events({"before-call.s3": hook, "after-call.s3": hook}):
        promote(settings, cand)
    os._exit(0)


def _promotion_calls(settings, cand: Candidate) -> list[str]:
    """The S3 requests of one whole promotion, in order, as ``Operation key``."""
    seen = []
    Store(settings, cand.model).check_conditional_writes()  # once per process: not one of the promotion's requests

    def note(params, model, **kwargs):
        seen.append(f"{model.name} {params.get('Key') or params.get('Prefix') or ''}")

    with s3_events({"before-parameter-build.s3": note}):
        promote(settings, cand)
    return seen


def phase(call: str) -> str:
    operation, _, key = call.partition(" ")
    if operation in ("CopyObject", "HeadObject"):
        return "copy"
    if operation == "PutObject":
        return "commit" if key.endswith(MANIFEST) else "claim" if f"/{CLAIMS}/" in key else "upload"
    if operation == "GetObject" and f"/{STAGING}/" in key:
        return "verify"
    return "list/claim/cleanup"


def test_a_promotion_killed_anywhere_leaves_no_half_visible_version_and_a_rerun_commits_it(
    local_services, tmp_path, reliability
):
    settings = local_services
    compiled = artifact(tmp_path / "compiled", "kill")
    calls = _promotion_calls(settings, candidate("kill-dry-run", "1", compiled))
    phases = [phase(c) for c in calls]
    assert {"upload", "verify", "claim", "copy", "commit"} <= set(phases), calls
    points = [(i, when) for i in range(1, len(calls) + 1) for when in ("before", "after")]
    assert len(points) >= 20
    killed = {}
    for i, when in points:
        model = f"kill-{i}-{when}"
        child = FORK.Process(target=_promote_and_die, args=(settings, candidate(model, "7", compiled), i, when))
        child.start()
        child.join(60)
        assert child.exitcode == -signal.SIGKILL, f"{model}: exit code {child.exitcode}"
        reliability.faults += 1
        killed[phases[i - 1]] = killed.get(phases[i - 1], 0) + 1
        store = Store(settings, model)
        committed, problems = audit(store)
        reliability.lost_or_half_visible += len(problems)
        assert problems == [], f"killed {when} request {i} ({calls[i - 1]}): {problems}"
        # the rerun resumes the same claim and commits a correct manifest
        promotion = promote(settings, candidate(model, "7", compiled))
        committed, problems = audit(store)
        ok = list(committed) == [promotion.version] and not problems
        ok &= committed[promotion.version]["artifact_sha256"] == compiled.sha256
        ok &= {f["artifact_path"] for f in committed[promotion.version]["files"]} == set(ARTIFACT_FILES)
        ok &= store.keys(f"{STAGING}/") == []
        reliability.lost_or_half_visible += 0 if ok else 1
        assert ok, f"after a kill {when} request {i} ({calls[i - 1]}) the rerun left {committed}, {problems}"
    assert all(killed.get(p, 0) >= 2 for p in ("upload", "verify", "claim", "copy", "commit")), killed


def _promote_at(settings, cand: Candidate, start, results) -> None:
    start.wait(30)
    try:
        promotion = promote(settings, cand)
        results.put((cand.registry_version, promotion.version, promotion.already_promoted))
    except Exception as exc:  # reported to the parent, which fails the test with it
        results.put((cand.registry_version, f"{type(exc).__name__}: {exc}", None))


def _race(settings, cands: list[Candidate]) -> list[tuple]:
    start, results = FORK.Event(), FORK.Queue()
    children = [FORK.Process(target=_promote_at, args=(settings, c, start, results)) for c in cands]
    for child in children:
        child.start()
    start.set()
    outcomes = [results.get(timeout=120) for _ in children]
    for child in children:
        child.join(30)
    return outcomes


def test_racing_promotions_promote_one_version_once_and_two_versions_to_two(local_services, tmp_path, reliability):
    settings = local_services
    for round_no in range(3):
        model = f"race-same-{round_no}"
        compiled = artifact(tmp_path / model, model)
        outcomes = _race(settings, [candidate(model, "3", compiled)] * 3)
        reliability.races += 1
        numbers = {number for _, number, _ in outcomes}
        assert len(numbers) == 1 and isinstance(next(iter(numbers)), int), outcomes
        assert sorted(already for _, _, already in outcomes) == [False, True, True]  # one did it
        committed, problems = audit(Store(settings, model))
        reliability.lost_or_half_visible += len(problems) + abs(len(committed) - 1)
        assert list(committed) == list(numbers) and not problems, (committed, problems)

    model = "race-two-versions"
    first = artifact(tmp_path / "v1", "v1")
    promote(settings, candidate(model, "1", first))
    store = Store(settings, model)
    before = {k: store.client.head_object(Bucket=store.bucket, Key=store.root + k)["ETag"] for k in store.keys("1/")}
    outcomes = _race(
        settings,
        [
            candidate(model, "2", artifact(tmp_path / "v2", "v2")),
            candidate(model, "3", artifact(tmp_path / "v3", "v3")),
        ],
    )
    reliability.races += 1
    assert all(isinstance(number, int) for _, number, _ in outcomes), outcomes
    committed, problems = audit(store)
    by_registry = {m["mlflow"]["version"]: n for n, m in committed.items()}
    assert by_registry.keys() == {"1", "2", "3"} and len(set(by_registry.values())) == 3 and not problems
    after = {k: store.client.head_object(Bucket=store.bucket, Key=store.root + k)["ETag"] for k in store.keys("1/")}
    reliability.lost_or_half_visible += len(problems) + (before != after)
    assert before == after  # the committed version 1 was not touched


def test_a_compiler_killed_from_outside_is_compiled_again_and_the_cache_holds_no_corrupt_entry(
    exported, tmp_path, reliability
):
    import psutil

    from tasks.compile.cache import LocalCache
    from tasks.compile.run import compile_config

    cache = LocalCache(tmp_path / "cache")
    killed = []

    def kill_first_compiler():
        def compiler():
            for child in psutil.Process().children(recursive=True):
                try:
                    if "tasks.compile.worker" in " ".join(child.cmdline()):
                        return child
                except psutil.Error:
                    continue
            return None

        child = wait_until("a compiler process", compiler, 120, lambda: "", poll_s=0.05)
        os.killpg(child.pid, signal.SIGKILL)  # while it loads the runtime and the model (a compile takes ~1 s)
        killed.append(child.pid)

    killer = threading.Thread(target=kill_first_compiler)
    killer.start()
    compiled = compile_config(
        exported, CompileConfig(target="onnxruntime", precision="fp32"), tmp_path / "c", cache=cache
    )
    killer.join()
    reliability.faults += 1
    assert killed and compiled.status == "ok", compiled.reason
    assert "killed by SIGKILL; compiling again" in Path(compiled.log_uri.removeprefix("file://")).read_text()
    entries = [p for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")]
    assert len(entries) == 1
    entry = json.loads((entries[0] / "entry.json").read_text())
    assert all(sha256_file(entries[0] / "files" / name) == digest for name, digest in entry["files"].items())
    assert tree_sha256(entries[0] / "files") == entry["tree_sha256"]


def test_mlflow_restarted_mid_run_the_stages_retry_and_register_one_version(
    local_services, exported, dataset_ref, compiled_outcome, reliability, tmp_path
):
    """The record and register stages, with MLflow stopped and started again while record is logging."""
    from mlflow.exceptions import MlflowException

    from tasks.core.params import PipelineParams

    settings = local_services
    outcome, baseline = compiled_outcome
    model = exported.model_copy(update={"name": "mlflow-restart"})
    ctx = RunContext(run_id="restart-run-1", run_uri=tmp_path.as_uri(), params=PipelineParams(model_name=model.name))
    registry = registry_client.client(settings)
    pid_before = services._running_pid(settings, "mlflow")
    restarted = threading.Event()

    def restart_when_recording():
        def recording():
            try:
                return registry.search_runs(
                    [registry.get_experiment_by_name(settings.experiment).experiment_id],
                    filter_string=f"tags.{registry_client.PIPELINE_RUN_TAG} = '{ctx.run_id}'",
                )
            except Exception:  # noqa: BLE001 - the experiment may not exist yet
                return None

        wait_until("the record stage's first run", recording, 120, lambda: "", poll_s=0.05)
        services.restart("mlflow", settings, log=lambda _: None)
        restarted.set()

    restarter = threading.Thread(target=restart_when_recording)
    restarter.start()
    attempts = {"record": 0, "register": 0}

    def with_task_retries(stage, call):  # what the DAG's retries do for these two tasks
        for _ in range(3):
            attempts[stage] += 1
            try:
                return call()
            except (MlflowException, OSError, RuntimeError):
                time.sleep(2)
        return call()

    parent, recorded = with_task_retries(
        "record", lambda: record_stage.record(settings, ctx, model, dataset_ref, [baseline], [outcome], {})
    )
    registration = with_task_retries(
        "register",
        lambda: register_stage.register(settings, ctx, model, recorded[0], None, dataset_ref, parent),
    )
    restarter.join()
    reliability.faults += 1
    assert restarted.is_set() and services._running_pid(settings, "mlflow") != pid_before
    # a task retried after the restart (Airflow would) registers nothing twice
    again = register_stage.register(settings, ctx, model, recorded[0], None, dataset_ref, parent)
    versions = registry.search_model_versions(f"name = '{model.name}'")
    reliability.lost_or_half_visible += abs(len(versions) - 1)
    assert [v.version for v in versions] == [registration.version] == [again.version]
    experiment = registry.get_experiment_by_name(settings.experiment).experiment_id
    parents = registry.search_runs(
        [experiment], filter_string=f"tags.{registry_client.PIPELINE_RUN_TAG} = '{ctx.run_id}'"
    )
    assert [r.info.run_id for r in parents] == [parent]
    print(f"MLflow restarted mid-run; attempts {attempts}")


MODEL_SUFFIXES = {".onnx", ".bin", ".pt", ".pth", ".pt2", ".npz", ".neff", ".so", ".plan", ".png"}  # weights, arrays
TEXT_SUFFIXES = (".json", ".yaml", ".yml", ".md", ".html", ".txt", ".log", ".pbtxt", ".config", ".csv", "MLmodel")


def test_the_credentials_never_reach_a_log_report_mlflow_record_or_s3_object(local_services, reliability):
    """The session ran every pipeline with sentinel credentials (conftest); search everything it wrote."""
    from devtools.demo import run_pipeline
    from tasks.core.storage import s3_client

    settings = local_services
    if not list(settings.runs_dir.glob("*/report.json")):  # run alone: make one run to search
        code, _ = run_pipeline(
            settings, {"model_name": "sentinel-run", "targets": ["onnxruntime"], "precisions": ["fp32"]}
        )
        assert code == 0
    secrets = [value.encode() for value in SENTINEL_CREDENTIALS.values() if "user" not in value]
    found, searched = [], 0
    for path in [*settings.home.rglob("*"), *(PROJECT_ROOT / "dags").rglob("*.py")]:
        if path.is_file() and not path.is_symlink() and path.suffix not in MODEL_SUFFIXES:
            data = path.read_bytes()
            searched += 1
            found += [f"{path}: {s.decode()}" for s in secrets if s in data]
    s3 = s3_client(settings)
    for bucket in (settings.serving_bucket, settings.mlflow_artifacts_bucket):
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                if item["Key"].endswith(TEXT_SUFFIXES):
                    body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
                    searched += 1
                    found += [f"s3://{bucket}/{item['Key']}: {s.decode()}" for s in secrets if s in body]
    registry = registry_client.client(settings)
    experiments = registry.search_experiments()
    for run in registry.search_runs([e.experiment_id for e in experiments], max_results=5000):
        values = [*run.data.params.values(), *run.data.tags.values()]
        found += [f"run {run.info.run_id}: {s.decode()}" for s in secrets for v in values if s.decode() in v]
    for version in registry.search_model_versions():
        values = [version.description or "", *version.tags.values()]
        found += [
            f"{version.name} v{version.version}: {s.decode()}" for s in secrets for v in values if s.decode() in v
        ]
    assert searched > 50  # logs, reports, the MLflow database, S3 objects: there was something to search
    assert found == []
