"""Registry review and promotion to S3, against the real local services (moto's S3 server, MLflow)."""

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import threading
import urllib.request

import kubernetes_validate
import numpy as np
import pytest
import yaml
from conftest import free_port

from devtools.services import wait_until_answering
from tasks.core import settings as settings_module
from tasks.core.files import local_path, sha256_file, to_uri, tree_sha256
from tasks.core.params import PipelineParams
from tasks.core.records import RunContext
from tasks.datasets.prepare import load
from tasks.registry.client import client as registry_client
from tasks.registry.review import approve, approved_model, pending_champions
from tasks.serving import commit as promote_module
from tasks.serving.commit import Candidate, promote
from tasks.serving.pointer import point_serving
from tasks.serving.store import PromotionError, Store
from tasks.stages import promote_model as promotion
from tasks.stages.compile_pipeline.record import record
from tasks.stages.compile_pipeline.register import register
from tasks.stages.runner import run_uri_for

pytestmark = pytest.mark.integration


def pinned(pointer: str | bytes, tf_serving: bool = False) -> list[int]:
    """The versions a Triton config.pbtxt (or a TF Serving models.config) pins, parsed with the runtime's schema."""
    from google.protobuf import text_format

    text = pointer.decode() if isinstance(pointer, bytes) else pointer
    if tf_serving:
        from tensorflow_serving.config import model_server_config_pb2

        config = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
        return list(config.model_config_list.config[0].model_version_policy.specific.versions)
    from tritonclient.grpc import model_config_pb2

    return list(text_format.Parse(text, model_config_pb2.ModelConfig()).version_policy.specific.versions)


@pytest.fixture
def serving_prefix(local_services, monkeypatch, request):
    """A prefix of the serving bucket of its own for each test."""
    monkeypatch.setenv("SERVING_PREFIX", f"t-{request.node.name[:40]}")
    return settings_module.load()


@pytest.fixture(scope="module")
def registered(local_services, exported, dataset_ref, compiled_outcome):
    """Two registry versions of a model of this module's own, as two pipeline runs register them."""
    model = exported.model_copy(update={"name": "promotion-test"})
    return model, register_versions(local_services, model, ("promote-a", "promote-b"), dataset_ref, compiled_outcome)


def register_versions(settings, model, run_ids, dataset_ref, compiled_outcome) -> list:
    """One registry version of ``model`` per pipeline run id, recorded and registered as the pipeline does."""
    outcome, baseline = compiled_outcome
    versions = []
    for run_id in run_ids:
        ctx = RunContext(run_id=run_id, run_uri=run_uri_for(run_id), params=PipelineParams())
        parent, recorded = record(settings, ctx, model, dataset_ref, [baseline], [outcome], {})
        versions.append(register(settings, ctx, model, recorded[0], dataset=dataset_ref, parent_run_id=parent))
    return versions


def _keys(settings, model: str) -> set[str]:
    return set(Store(settings, model).keys(""))


def _candidate(exported, artifact, registry_version: str) -> Candidate:
    return Candidate(
        model=exported.name,
        registry_version=registry_version,
        run_id="r",
        artifact=artifact,
        inputs=exported.inputs,
        outputs=exported.outputs,
        source_sha256=exported.source_sha256,
    )


def test_champion_is_promoted_smoke_tested_and_served(serving_prefix, registered):
    settings = serving_prefix
    model, (first, _) = registered
    client = registry_client(settings)
    approve(settings, model.name, first.version)  # what a reviewer does
    assert (model.name, first.version) in pending_champions(settings)

    (request,) = promotion.find.run({"model_name": model.name, "version": "champion"})
    served = promotion.serve.run(promotion.smoke_test.run(promotion.promote.run(request)))

    number = served["version"]
    keys = _keys(settings, model.name)
    assert {f"{number}/model.onnx", f"{number}/manifest.json", "config.pbtxt", f"k8s/{number}.yaml"} <= keys
    assert not [k for k in keys if k.startswith(".staging/")]  # staging is cleaned after the commit
    manifest = json.loads(Store(settings, model.name).client.get_object(
        Bucket=settings.serving_bucket, Key=f"{settings.serving_prefix}/{model.name}/{number}/manifest.json")["Body"].read())  # fmt: skip
    assert manifest["mlflow"]["version"] == first.version and manifest["version"] == number
    assert manifest["files"][0]["size"] > 0 and len(manifest["files"][0]["sha256"]) == 64
    assert manifest["source_sha256"] == model.source_sha256 and manifest["inputs"][0]["name"]
    (smoked,) = served["smoke"]["outputs"]
    assert smoked["top5_agreement"] == 1.0 and smoked["out_of_tolerance"] == 0 and served["smoke"]["samples"] == 16
    assert pinned(served["serving"]["pointer"]) == [number]  # Triton's config.pbtxt pins the version
    objects = list(yaml.safe_load_all(Store(settings, model.name).client.get_object(
        Bucket=settings.serving_bucket, Key=f"{settings.serving_prefix}/{model.name}/k8s/{number}.yaml")["Body"].read()))  # fmt: skip
    assert [o["kind"] for o in objects] == ["Deployment", "Service"]
    for obj in objects:
        kubernetes_validate.validate(obj, kubernetes_validate.latest_version(), strict=True)

    version = client.get_model_version(model.name, first.version)
    assert version.tags["promoted_uri"] == served["promotion"]["uri"]
    assert (model.name, first.version) not in pending_champions(settings)
    again = promotion.promote.run(request)  # promoting the same registry version again is idempotent
    assert again["version"] == number and again["promotion"]["already_promoted"]


def test_a_rejected_or_gate_failed_version_is_never_promoted(serving_prefix, registered):
    settings = serving_prefix
    model, (_, second) = registered
    client = registry_client(settings)
    approve(settings, model.name, second.version)
    client.set_model_version_tag(model.name, second.version, "review", "rejected")
    try:
        with pytest.raises(PromotionError, match=f"version {second.version} of {model.name} was rejected in review"):
            promotion.find.run({"model_name": model.name, "version": "champion"})
        with pytest.raises(PromotionError, match="rejected in review"):  # even when asked for directly
            promotion.promote.run({"model": model.name, "registry_version": second.version})
        assert (model.name, second.version) not in pending_champions(settings)
        client.delete_model_version_tag(model.name, second.version, "review")
        client.set_model_version_tag(model.name, second.version, "validation", "fail")
        with pytest.raises(PromotionError, match="did not pass the validation gate"):
            promotion.find.run({"model_name": model.name, "version": second.version})
    finally:
        client.set_model_version_tag(model.name, second.version, "validation", "pass")
    assert not _keys(settings, model.name)  # nothing was written


def test_a_changed_byte_in_a_registered_artifact_fails_promotion_by_name_even_with_its_record_changed_too(
    serving_prefix, exported, dataset_ref, compiled_outcome, reliability
):
    """Integrity is anchored in the registry (tag artifact_sha256, written at registration), not in the
    artifact_record.json that travels with the files: whoever changes both is still refused, and nothing is
    committed."""
    settings = serving_prefix
    model = exported.model_copy(update={"name": "tampered"})
    (version,) = register_versions(settings, model, ("tamper-a",), dataset_ref, compiled_outcome)
    client = registry_client(settings)
    model_id = client.get_model_version(model.name, version.version).source.rsplit("/", 1)[-1]
    s3 = Store(settings, model.name).client
    keys = [item["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=settings.mlflow_artifacts_bucket)
            for item in page.get("Contents", []) if f"/{model_id}/" in item["Key"]]  # fmt: skip
    graph = next(k for k in keys if k.endswith("/model.onnx"))
    record_key = next(k for k in keys if k.endswith("/artifact.json"))
    body = s3.get_object(Bucket=settings.mlflow_artifacts_bucket, Key=graph)["Body"].read()
    s3.put_object(Bucket=settings.mlflow_artifacts_bucket, Key=graph, Body=body[:-1] + bytes([body[-1] ^ 1]))
    # ...and the record beside it rewritten to match the changed files, as whoever can write the one can the other
    prefix = graph.rsplit("/", 1)[0] + "/"  # the compiled files' folder among the model's artifacts
    compiled_keys = sorted(k for k in keys if k.startswith(prefix))
    staged = {}
    for key in compiled_keys:
        staged[key[len(prefix) :]] = s3.get_object(Bucket=settings.mlflow_artifacts_bucket, Key=key)["Body"].read()
    tree = hashlib.sha256()
    for name in sorted(staged):
        tree.update(name.encode() + b"\0" + hashlib.sha256(staged[name]).hexdigest().encode() + b"\n")
    artifact_record = json.loads(s3.get_object(Bucket=settings.mlflow_artifacts_bucket, Key=record_key)["Body"].read())
    artifact_record["sha256"] = tree.hexdigest()
    s3.put_object(Bucket=settings.mlflow_artifacts_bucket, Key=record_key, Body=json.dumps(artifact_record).encode())
    reliability.faults += 1
    approve(settings, model.name, version.version)
    with pytest.raises(PromotionError, match=rf"version {version.version} of tampered: its compiled files are not what "
                       "was registered .*artifact_sha256"):  # fmt: skip
        promotion.promote.run({"model": model.name, "registry_version": version.version})
    assert not _keys(settings, model.name)  # nothing staged, claimed or committed


def test_two_promotions_at_once_get_distinct_versions(serving_prefix, exported, compiled_outcome, monkeypatch):
    settings = serving_prefix
    artifact = compiled_outcome[0].compiled
    # both promotions read the bucket before either claims, so both first try the same number
    barrier = threading.Barrier(2, timeout=60)
    listed = Store.version_numbers
    monkeypatch.setattr(Store, "version_numbers", lambda self: (barrier.wait(), listed(self))[1])
    results, errors = {}, []

    def run(registry_version: str) -> None:
        try:
            results[registry_version] = promote(settings, _candidate(exported, artifact, registry_version))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(v,)) for v in ("7", "8")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    monkeypatch.setattr(Store, "version_numbers", listed)
    assert not errors
    assert sorted(p.version for p in results.values()) == [1, 2]
    committed = Store(settings, exported.name).committed()
    assert {n: m["mlflow"]["version"] for n, m in committed.items()} == {
        results["7"].version: "7",
        results["8"].version: "8",
    }


def test_a_crash_between_upload_and_commit_leaves_nothing_visible_and_a_retry_succeeds(
    serving_prefix, exported, compiled_outcome, monkeypatch
):
    settings = serving_prefix
    candidate = _candidate(exported, compiled_outcome[0].compiled, "3")
    copy = promote_module._copy_into_version

    def copy_then_die(*args, **kwargs):
        copy(*args, **kwargs)
        raise KeyboardInterrupt("worker killed before the commit")

    monkeypatch.setattr(promote_module, "_copy_into_version", copy_then_die)
    with pytest.raises(KeyboardInterrupt):
        promote(settings, candidate)
    store = Store(settings, exported.name)
    assert store.committed() == {}  # files were copied, but no reader sees an uncommitted version
    assert "config.pbtxt" not in _keys(settings, exported.name)
    with pytest.raises(PromotionError, match="not a committed version"):
        point_serving(settings, exported.name, 1)

    monkeypatch.setattr(promote_module, "_copy_into_version", copy)
    done = promote(settings, candidate)  # the retry resumes its claim
    assert done.version == 1 and list(store.committed()) == [1]
    assert not [k for k in _keys(settings, exported.name) if k.startswith(".staging/")]


def test_a_promoted_version_is_never_overwritten(serving_prefix, exported, compiled_outcome, tmp_path):
    settings = serving_prefix
    artifact = compiled_outcome[0].compiled
    promote(settings, _candidate(exported, artifact, "5"))
    other = tmp_path / "other"
    other.mkdir()
    (other / "model.onnx").write_bytes(b"another model")
    changed = artifact.model_copy(update={"uri": to_uri(other), "sha256": tree_sha256(other), "files": ["model.onnx"]})
    with pytest.raises(PromotionError, match="never overwritten"):
        promote(settings, _candidate(exported, changed, "5"))


def test_rollback_points_serving_back_to_a_committed_version(serving_prefix, exported, compiled_outcome):
    settings = serving_prefix
    artifact = compiled_outcome[0].compiled
    for registry_version in ("1", "2"):
        point_serving(
            settings, exported.name, promote(settings, _candidate(exported, artifact, registry_version)).version
        )
    assert [2] == pinned(Store(settings, exported.name).client.get_object(
        Bucket=settings.serving_bucket, Key=f"{settings.serving_prefix}/{exported.name}/config.pbtxt")["Body"].read().decode())  # fmt: skip
    (request,) = promotion.find.run({"model_name": exported.name, "rollback_to": 1})
    served = promotion.serve.run(promotion.promote.run(request))
    assert pinned(served["serving"]["pointer"]) == [1]
    with pytest.raises(PromotionError, match="version 9 is not a committed version"):
        promotion.find.run({"model_name": exported.name, "rollback_to": 9})


def test_a_rollback_moves_the_registry_with_serving(serving_prefix, exported, dataset_ref, compiled_outcome):
    """After every pointer move, a rollback included, alias serving and the model's tags name what serves."""
    settings = serving_prefix
    model = exported.model_copy(update={"name": "rolled-back"})
    versions = register_versions(settings, model, ("roll-a", "roll-b"), dataset_ref, compiled_outcome)
    client = registry_client(settings)
    served = []
    for version in versions:
        approve(settings, model.name, version.version)
        (request,) = promotion.find.run({"model_name": model.name, "version": version.version})
        served.append(promotion.serve.run(promotion.smoke_test.run(promotion.promote.run(request)))["version"])
    assert client.get_model_version_by_alias(model.name, "serving").version == versions[1].version
    (request,) = promotion.find.run({"model_name": model.name, "rollback_to": served[0]})
    assert promotion.serve.run(promotion.smoke_test.run(promotion.promote.run(request)))["serving"]["moved"]
    assert client.get_model_version_by_alias(model.name, "serving").version == versions[0].version
    tags = client.get_registered_model(model.name).tags
    assert tags["serving_version"] == str(served[0]) and tags["serving_registry_version"] == versions[0].version
    assert tags["last_rollback"].startswith(f"to serving version {served[0]} at ")
    assert client.get_model_version(model.name, versions[0].version).tags["rolled_back_to"]


@pytest.mark.reliability
def test_promotions_at_once_leave_serving_on_the_highest_version(
    serving_prefix, exported, compiled_outcome, reliability
):
    """N promotions of one model race to move its pointer; it ends on the highest committed version, every round."""
    settings = serving_prefix
    artifact = compiled_outcome[0].compiled
    store = Store(settings, exported.name)
    pointer_key = f"{settings.serving_prefix}/{exported.name}/config.pbtxt"
    at_once = 5
    for round_ in range(4):
        barrier = threading.Barrier(at_once, timeout=120)
        numbers, errors = [], []

        def promote_and_serve(registry_version: str, barrier=barrier, numbers=numbers, errors=errors) -> None:
            try:
                number = promote(settings, _candidate(exported, artifact, registry_version)).version
                numbers.append(number)
                barrier.wait()  # every pointer move starts together, whatever order the commits finished in
                point_serving(settings, exported.name, number)
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
                barrier.abort()

        threads = [
            threading.Thread(target=promote_and_serve, args=(str(round_ * at_once + i + 1),)) for i in range(at_once)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors
        highest = max(store.committed())
        assert sorted(numbers) == list(range(highest - at_once + 1, highest + 1))
        head = store.client.head_object(Bucket=settings.serving_bucket, Key=pointer_key)
        body = store.client.get_object(Bucket=settings.serving_bucket, Key=pointer_key)["Body"].read().decode()
        if head["Metadata"]["serving-version"] != str(highest) or pinned(body) != [highest]:
            reliability.lost_or_half_visible += 1
        assert head["Metadata"]["serving-version"] == str(highest) and pinned(body) == [highest]
        reliability.races += 1
        reliability.pointer_races += 1
    # an older version finishing late leaves serving where it is; only a rollback moves it back
    late = point_serving(settings, exported.name, highest - 1)
    assert not late.moved and late.served_version == highest
    back = point_serving(settings, exported.name, highest - 1, rollback=True)
    assert back.moved and back.served_version == highest - 1


def test_tf_serving_layout_for_a_neuron_saved_model(serving_prefix, exported, tmp_path):
    """A Neuron (inf1) TensorFlow artifact: SavedModel files at the version root, NEFFs alongside, models.config."""
    from tasks.core.records import CompileConfig, CompiledArtifact

    settings = serving_prefix
    files = {"saved_model/saved_model.pb": b"graph", "saved_model/variables/variables.index": b"index",
             "saved_model/variables/variables.data-00000-of-00001": b"weights", "neff/neuron_op_0.neff": b"neff"}  # fmt: skip
    for name, body in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(body)
    artifact = CompiledArtifact(
        config=CompileConfig(target="neuron-inf1", precision="bf16", batch_size=8),
        status="ok",
        uri=to_uri(tmp_path),
        sha256=tree_sha256(tmp_path),
        files=sorted(files),
    )
    promoted = promote(settings, _candidate(exported, artifact, "1"))
    served = point_serving(settings, exported.name, promoted.version)
    keys = _keys(settings, exported.name)
    assert {"1/saved_model.pb", "1/variables/variables.index", "1/neff/neuron_op_0.neff", "models.config"} <= keys
    base = f"s3://{settings.serving_bucket}/{settings.serving_prefix}/{exported.name}"
    assert f'base_path: "{base}"' in served.pointer
    assert pinned(served.pointer, tf_serving=True) == [1]
    deployment = next(yaml.safe_load_all(Store(settings, exported.name).client.get_object(
        Bucket=settings.serving_bucket, Key=f"{settings.serving_prefix}/{exported.name}/k8s/1.yaml")["Body"].read()))  # fmt: skip
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["aws.amazon.com/neuron"] == 1
    assert container["securityContext"]["capabilities"]["add"] == ["IPC_LOCK"]
    assert [p["containerPort"] for p in container["ports"]] == [8500, 8501]
    assert f"--model_config_file={base}/models.config" in container["args"]
    # the pods read S3 as serving is configured (here: AWS S3 itself), never the pipeline's local endpoint
    assert not [e for e in container["env"] if "ENDPOINT" in e["name"]] and "127.0.0.1" not in json.dumps(deployment)
    minio = dataclasses.replace(
        settings, serving_s3_endpoint_url="http://minio.storage:9000", serving_region="eu-west-1"
    )
    point_serving(minio, exported.name, promoted.version)
    deployment = next(yaml.safe_load_all(Store(settings, exported.name).client.get_object(
        Bucket=settings.serving_bucket, Key=f"{settings.serving_prefix}/{exported.name}/k8s/1.yaml")["Body"].read()))  # fmt: skip
    env = {e["name"]: e["value"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env == {"AWS_REGION": "eu-west-1", "S3_ENDPOINT": "http://minio.storage:9000",
                   "AWS_ENDPOINT_URL": "http://minio.storage:9000"}  # fmt: skip
    assert sha256_file(local_path(artifact.uri) / "neff/neuron_op_0.neff") == next(
        f["sha256"] for f in promoted.manifest["files"] if f["path"] == "neff/neuron_op_0.neff"
    )


@pytest.mark.reliability
def test_promote_to_a_missing_bucket_names_it(local_services, exported, compiled_outcome, monkeypatch, reliability):
    reliability.bad_inputs += 1
    monkeypatch.setenv("SERVING_BUCKET", "no-such-bucket")
    with pytest.raises(PromotionError, match="bucket 'no-such-bucket' is not reachable"):
        promote(settings_module.load(), _candidate(exported, compiled_outcome[0].compiled, "1"))


def test_mlflow_models_serve_answers_for_the_champion(local_services, registered, dataset_ref, tmp_path):
    model, (first, _) = registered
    approve(local_services, model.name, first.version)
    port = free_port()
    server = subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "mlflow"), "models", "serve", "-m",
         f"models:/{approved_model(model.name)}@champion", "--env-manager", "local", "--host", "127.0.0.1", "-p", str(port)],
        stdout=(tmp_path / "serve.log").open("w"), stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]},  # its uvicorn
    )  # fmt: skip
    try:
        wait_until_answering(
            "mlflow models serve", server, f"http://127.0.0.1:{port}/ping", tmp_path / "serve.log", 180
        )
        cat = load(dataset_ref).inputs(0, 1)
        body = json.dumps({"inputs": next(iter(cat.values())).tolist()}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations", data=body, headers={"Content-Type": "application/json"}
        )
        predictions = np.array(json.loads(urllib.request.urlopen(request, timeout=60).read())["predictions"])
        assert predictions.shape == (1, 1000)
        assert set(np.argsort(-predictions[0])[:3].tolist()) == {281, 282, 285}  # tabby, tiger cat, Egyptian cat
    finally:
        if server.poll() is None:
            os.killpg(server.pid, 15)
            server.wait(timeout=30)
