"""Airflow on the CeleryExecutor as a fleet (`make cluster`): PostgreSQL, a real Redis broker, and workers that are
hosts of their own (own hostname, own home, no shared directory), exchanging everything through S3.

One cluster for the module: a run with each task on its queue's worker and every artifact crossing hosts through
the run store, a compile worker lost in the middle of a compile survived; eight runs at once held to the compiler
slot cap; and a worker configured with a run store on its own disk refused by name by the next host."""

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime

import psutil
import pytest
from conftest import free_port, wait_until

from devtools.airflow_local import ADMIN, admin_password
from devtools.cluster import WORKERS, LocalCluster
from tasks import targets
from tasks.compile.cache import ENTRY, S3Cache
from tasks.core import store
from tasks.core.records import safe_run_id
from tasks.core.settings import PROJECT_ROOT
from tasks.registry.client import client

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.scenario]

COMPILE, CPU = WORKERS
ARTIFACTS = PROJECT_ROOT / "test-artifacts"  # the cluster's figures, for the README
COMPILE_TASKS = {"plan", "compile_config_cpu"}  # plan judges target availability where compiles run
CPU_HOST_TASKS = {"baseline_cpu", "validate_cpu", "benchmark_cpu"}  # host class cpu's own tasks


class Api:
    """Airflow's REST API as a client uses it: a JWT from /auth/token, then /api/v2."""

    def __init__(self, url: str, password: str):
        self.url = url
        self.token = self.call("POST", "/auth/token", {"username": ADMIN, "password": password})["access_token"]

    def call(self, method: str, path: str, body: dict | None = None, attempts: int = 3):
        """One request; a 5xx is retried, so callers send only requests that are safe to repeat (a new run carries
        its own run id)."""
        request = urllib.request.Request(
            self.url + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Accept": "application/json"}
            | ({"Authorization": f"Bearer {self.token}"} if getattr(self, "token", None) else {}),
        )
        for attempt in range(attempts):
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    return json.loads(response.read() or b"null")
            except urllib.error.HTTPError as error:
                if error.code < 500 or attempt == attempts - 1:
                    raise
                time.sleep(2)

    def trigger(self, dag_id: str, run_id: str, conf: dict) -> str:
        body = {"dag_run_id": run_id, "logical_date": None, "conf": conf}
        try:
            return self.call("POST", f"/api/v2/dags/{dag_id}/dagRuns", body)["dag_run_id"]
        except urllib.error.HTTPError as error:
            if error.code != 409:  # 409: an earlier attempt did create it
                raise
            return run_id

    def answers(self, method: str, path: str) -> bool:
        try:
            self.call(method, path)
            return True
        except OSError:  # urllib's HTTPError (404 until the DAG is parsed) and connection errors
            return False

    def run_path(self, run_id: str) -> str:
        return f"/api/v2/dags/compile_pipeline/dagRuns/{urllib.parse.quote(run_id)}"

    def instances(self, run_id: str) -> list[dict]:
        return self.call("GET", f"{self.run_path(run_id)}/taskInstances?limit=200")["task_instances"]

    def log(self, run_id: str, ti: dict) -> str:
        """A task instance's log, as the API server reads it back from S3 (remote logging)."""
        index = f"&map_index={ti['map_index']}" if ti["map_index"] >= 0 else ""
        path = f"{self.run_path(run_id)}/taskInstances/{ti['task_id']}/logs/{ti['try_number']}?full_content=true"
        return json.dumps(self.call("GET", path + index))


def _wait(what: str, check, timeout_s: float, cluster: LocalCluster, poll_s: float = 2.0):
    def logs() -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-1500:]}" for p in cluster.log_dir.glob("*.log")
        )

    return wait_until(what, check, timeout_s, logs, poll_s)


def _finished(api: Api, run_id: str, cluster: LocalCluster, timeout_s: float) -> str:
    def state():
        found = api.call("GET", api.run_path(run_id))["state"]
        return found if found in ("success", "failed") else None

    return _wait(f"run {run_id} finishing", state, timeout_s, cluster, 5)


def _compiler_under(pid: int) -> psutil.Process | None:
    """The compiler child process (tasks.compile.worker) of a task running under the worker ``pid``."""
    try:
        for process in psutil.Process(pid).children(recursive=True):
            if "tasks.compile.worker" in " ".join(process.cmdline()):
                return process
    except psutil.Error:
        pass
    return None


def _uris(record) -> list[str]:
    """Every URI of an object a stage result hands on (keys ending in ``uri``; not the MLflow server's), at any
    depth."""
    if isinstance(record, dict):
        found = [v for k, v in record.items() if k.endswith("uri") and k != "tracking_uri" and isinstance(v, str) and v]
        return found + [u for v in record.values() for u in _uris(v)]
    if isinstance(record, list):
        return [u for v in record for u in _uris(v)]
    return []


def _store_bytes(fs, prefix: str) -> int:
    return sum(info["size"] for info in fs.find(prefix, detail=True).values())


@pytest.fixture(scope="module")
def fleet(local_services):
    """The cluster of `make cluster`, started once for the module, the DAG parsed and unpaused."""
    cluster = LocalCluster(
        local_services, port=free_port(), redis_port=free_port(), postgres_port=free_port(), heartbeat_timeout_s=20
    )
    try:
        started = time.monotonic()
        cluster.start(log=lambda m: None)
        api = Api(cluster.url, admin_password(local_services))
        _wait("compile_pipeline parsed", lambda: api.answers("GET", "/api/v2/dags/compile_pipeline"), 300, cluster)
        api.call("PATCH", "/api/v2/dags/compile_pipeline", {"is_paused": False})
        print(f"cluster up in {time.monotonic() - started:.0f} s")
        yield cluster, api
    finally:
        cluster.stop()


@pytest.mark.reliability
def test_every_task_runs_on_its_queues_host_artifacts_cross_only_through_s3_and_a_lost_compile_worker_is_survived(
    fleet, local_services, tmp_path, reliability
):
    cluster, api = fleet
    started = time.monotonic()
    conf = {"model_name": "cluster-mobilenet", "targets": ["onnxruntime", "openvino"], "precisions": ["fp32"],
            "batch_sizes": [1, 4], "max_concurrency": 2, "benchmark_window_s": 0.3}  # fmt: skip
    run_id = api.trigger("compile_pipeline", "cluster-worker-lost", conf)

    # The compile worker's machine goes away while its compiler runs.
    worker = cluster.processes[COMPILE.hostname]
    compiler = _wait("a compile on the compile worker", lambda: _compiler_under(worker.pid), 600, cluster, 0.2)
    lost = cluster.lose_worker(COMPILE)
    assert compiler.pid in lost
    reliability.faults += 2  # the worker and its compiler, SIGKILLed
    _wait("every process of the lost worker gone",
          lambda: not [pid for pid in lost if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"],
          30, cluster, 0.5)  # fmt: skip
    cluster.start_worker(COMPILE)

    state = _finished(api, run_id, cluster, 1200)
    wall_s = time.monotonic() - started
    instances = api.instances(run_id)
    summary = [(ti["task_id"], ti["rendered_map_index"], ti["state"], ti["hostname"], ti["try_number"])
               for ti in instances]  # fmt: skip
    assert state == "success", summary

    # Compiles (and the plan) on the compile fleet, the cpu host class's tasks on its host, the rest on default;
    # host classes without configs (inf1, inf2, gpu) never reached a queue no worker takes.
    ran = [ti for ti in instances if ti["state"] == "success"]
    for ti in ran:
        expected = COMPILE if ti["task_id"] in COMPILE_TASKS else CPU
        assert ti["hostname"] == expected.hostname, summary
        assert ti["queue"] in expected.queues, summary
    assert {ti["task_id"] for ti in ran} >= COMPILE_TASKS | CPU_HOST_TASKS | {"register", "finalize"}
    for host_class in set(targets.host_classes()) - {"cpu"}:  # routed to nothing: the class's tasks skipped
        class_tasks = [ti for ti in instances if ti["task_id"].endswith(f"_{host_class}")]
        assert {ti["state"] for ti in class_tasks if not ti["task_id"].startswith("route_")} == {"skipped"}, summary
    compiles = [ti for ti in instances if ti["task_id"] == "compile_config_cpu"]
    assert len(compiles) == 2 and any(ti["try_number"] >= 2 for ti in compiles), summary  # retried after the loss

    candidate = client(local_services).get_model_version_by_alias("cluster-mobilenet", "candidate")
    assert candidate.tags["target"] in ("onnxruntime", "openvino") and candidate.tags["validation"] == "pass"

    # What one stage handed the next is in the run store on S3, never a path on a worker's disk.
    run_uri = f"{cluster.bucket_uri}/runs/{safe_run_id(run_id)}"
    stages = store.join(run_uri, store.STAGES_DIR)
    results = {name: store.read_json(store.join(stages, name)) for name in store.list_files(stages)}
    handed = [uri for result in results.values() for uri in _uris(result)]
    assert handed and [uri for uri in handed if not uri.startswith(("s3://", "builtin:", "models:/"))] == []
    validated = [r for name, r in results.items() if name.startswith("validate-")]
    assert {r["host"] for r in validated} == {CPU.hostname}
    compiled = [r for name, r in results.items() if name.startswith("compile_config-")]
    assert {r["host"] for r in compiled} == {COMPILE.hostname}
    # each worker fetched what it read into its own cache; no worker's home holds another's files
    homes = {kind.hostname: cluster.host_home(kind.hostname) for kind in WORKERS}
    assert any((homes[CPU.hostname] / "cache" / "objects").iterdir())
    for host, home in homes.items():
        others = [str(h) for name, h in homes.items() if name != host]
        for path in home.rglob("*.json"):
            assert not any(other in path.read_text(errors="replace") for other in others), path

    # The compile cache on S3 holds only whole entries: one per config, each with every file its entry lists.
    cache = S3Cache(f"{cluster.bucket_uri}/compile-cache", local_services.s3_endpoint_url)
    fs = store._s3_filesystem()
    entries = {key.split("/")[-2] for key in fs.find("pipeline-fleet/compile-cache") if key.endswith(f"/{ENTRY}")}
    assert len(entries) == 2
    for key in entries:
        assert cache.fetch(key, tmp_path / "fetched" / key) is not None  # every file and its sha256

    moved = _store_bytes(fs, f"pipeline-fleet/runs/{safe_run_id(run_id)}")
    figures = {"runs": 1, "hosts": [kind.hostname for kind in WORKERS], "tasks": len(ran),
               "bytes_through_run_store": moved, "wall_s": round(wall_s)}  # fmt: skip
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "cluster.json").write_text(json.dumps(figures, indent=2))
    print(f"cluster: {figures}")


def _most_at_once(intervals: list[tuple[str, str]]) -> int:
    """The most intervals (ISO start, end) open at one instant."""
    instant = datetime.fromisoformat
    events = sorted([(instant(start), 1) for start, _ in intervals] + [(instant(end), -1) for _, end in intervals])
    most = running = 0
    for _, step in events:  # an end sorts before a start at the same instant
        running += step
        most = max(most, running)
    return most


LOAD_RUNS = 8


@pytest.mark.reliability
def test_a_monday_of_retrains_at_once_all_register_within_the_compiler_slot_cap(
    fleet, local_services, tmp_path, reliability
):
    """Eight compile_pipeline runs triggered together through the REST API, pool compiler_slots at 1 while the
    compile worker could take 2: every run succeeds and registers one version, compiles never overlap, the
    cache holds only whole entries, and the API (and the scheduler behind it) keeps answering."""
    cluster, api = fleet
    pool = {"pool": "compiler_slots", "include_deferred": False}  # the API validates the whole pool
    api.call("PATCH", "/api/v2/pools/compiler_slots", {**pool, "slots": 1})
    try:
        assert api.call("GET", "/api/v2/pools/compiler_slots")["slots"] == 1
        started = time.monotonic()
        runs = {}
        for i in range(LOAD_RUNS):
            conf = {"model_name": f"monday-{i}", "model_uri": "builtin:text_encoder", "dataset": "builtin:text",
                    "targets": ["onnxruntime"], "precisions": ["fp32"], "batch_sizes": [1], "max_concurrency": 1,
                    "benchmark_window_s": 0.2}  # fmt: skip
            runs[conf["model_name"]] = api.trigger("compile_pipeline", f"monday-{i}", conf)
        slowest_answer = 0.0

        def states() -> dict[str, str] | None:
            nonlocal slowest_answer
            asked = time.monotonic()
            health = api.call("GET", "/api/v2/monitor/health")
            found = {m: api.call("GET", api.run_path(r))["state"] for m, r in runs.items()}
            slowest_answer = max(slowest_answer, time.monotonic() - asked)
            assert health["scheduler"]["status"] == "healthy", health
            return found if all(s in ("success", "failed") for s in found.values()) else None

        final = _wait(f"{LOAD_RUNS} runs finishing", states, 1500, cluster, 5)
        wall_s = time.monotonic() - started
    finally:
        api.call("PATCH", "/api/v2/pools/compiler_slots", {**pool, "slots": 2})
    instances = {m: api.instances(r) for m, r in runs.items()}
    failed = {m: [(t["task_id"], t["state"]) for t in instances[m] if t["state"] not in ("success", "skipped")]
              for m in runs}  # fmt: skip
    assert set(final.values()) == {"success"}, failed

    registry_client = client(local_services)
    for model, run_id in runs.items():
        versions = registry_client.search_model_versions(f"name = '{model}'")
        assert len(versions) == 1, (model, [v.version for v in versions])  # exactly one, never a duplicate
        assert versions[0].tags["pipeline_run_id"] == run_id
    compiles = [t for ts in instances.values() for t in ts if t["task_id"] == "compile_config_cpu"]
    assert len(compiles) == LOAD_RUNS and {t["pool"] for t in compiles} == {"compiler_slots"}
    most = _most_at_once([(t["start_date"], t["end_date"]) for t in compiles])
    assert most == 1, most  # the pool's cap, although the compile worker takes two tasks at once
    sweeps = [t for ts in instances.values() for t in ts if t["task_id"] in ("benchmark_cpu", "baseline_cpu")]
    assert _most_at_once([(t["start_date"], t["end_date"]) for t in sweeps]) <= CPU.concurrency
    # ...but one sweep at a time on the host: each waited for the others (host_lock), none measured beside another
    cache = S3Cache(f"{cluster.bucket_uri}/compile-cache", local_services.s3_endpoint_url)
    fs = store._s3_filesystem()
    entries = {key.split("/")[-2] for key in fs.find("pipeline-fleet/compile-cache") if key.endswith(f"/{ENTRY}")}
    for key in entries:
        assert cache.fetch(key, tmp_path / "fetched" / key) is not None
    reliability.load_runs_held += LOAD_RUNS
    reliability.races += 1
    summary = {"runs": LOAD_RUNS, "wall_s": round(wall_s), "compiles_at_once": most, "slots": 1,
               "slowest_api_answer_s": round(slowest_answer, 2), "cache_entries": len(entries)}  # fmt: skip
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "load.json").write_text(json.dumps(summary, indent=2))
    print(f"load: {summary}")


@pytest.mark.reliability
def test_a_run_store_on_one_workers_disk_is_refused_by_name_on_the_next_host(fleet, reliability):
    """The default-queue worker is restarted with RUN_STORE_URI on its own disk (a forgotten setting): its run's
    next stage, on the compile worker, refuses the file:// URI of another host by name, although the same path is
    readable on this one machine; the run fails, and nothing is registered."""
    cluster, api = fleet
    misconfigured = cluster.host_home(CPU.hostname) / "runs"
    cluster.stop_worker(CPU)
    cluster.start_worker(CPU, RUN_STORE_URI=misconfigured.as_uri())
    try:
        conf = {"model_name": "one-disk", "model_uri": "builtin:text_encoder", "dataset": "builtin:text",
                "targets": ["onnxruntime"], "precisions": ["fp32"], "batch_sizes": [1]}  # fmt: skip
        run_id = api.trigger("compile_pipeline", "one-disk-store", conf)
        assert _finished(api, run_id, cluster, 600) == "failed"
        reliability.bad_inputs += 1
        instances = {ti["task_id"]: ti for ti in api.instances(run_id)}
        assert instances["export"]["state"] == "success"  # on the worker whose disk holds the store
        plan = instances["plan"]
        assert plan["state"] == "failed" and plan["hostname"] == COMPILE.hostname
        log = api.log(run_id, plan)
        assert f"is a path on host '{CPU.hostname}'" in log and f"runs on '{COMPILE.hostname}'" in log, log[-3000:]
        assert "RUN_STORE_URI" in log
        assert instances["register"]["state"] in ("upstream_failed", "skipped")
        # the report, on the misconfigured worker's disk, names the stage that left nothing behind
        report = json.loads((misconfigured / safe_run_id(run_id) / "report.json").read_text())
        assert report["status"] == "failed" and report["failed_stage"] == "plan"
    finally:
        cluster.stop_worker(CPU)
        cluster.start_worker(CPU)
