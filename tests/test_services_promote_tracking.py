"""Against the real local services: moto's S3 server and an MLflow tracking server."""

import json
import shutil
import socket

import mlflow
import numpy as np
import pytest

from tasks import services
from tasks.compile import compile_config
from tasks.dataset import load
from tasks.files import local_path, to_uri, tree_sha256
from tasks.gate import gate_all
from tasks.pipeline import run_dir_for
from tasks.promote import PromotionError, promote
from tasks.records import CompileConfig, PipelineParams, RunContext
from tasks.settings import load as load_settings
from tasks.storage import s3_client
from tasks.tracking import register

pytestmark = pytest.mark.integration


def test_a_taken_port_gives_a_clear_message(local_services, monkeypatch):
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        monkeypatch.setenv("S3_PORT", str(port))
        monkeypatch.setenv("S3_ENDPOINT_URL", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("COMPILE_PIPELINE_HOME", str(local_services.home / "other"))
        with pytest.raises(services.ServiceError, match=rf"port {port} on 127.0.0.1 is already in use.*S3_PORT=<port>"):
            services.start(load_settings(), log=lambda _: None)


@pytest.fixture(scope="module")
def compiled_outcome(exported, dataset_ref, tmp_path_factory):
    from tasks.benchmark import benchmark_artifact
    from tasks.records import BaselineResult, BenchmarkResult
    from tasks.validate import baseline_predictions, validate_artifact

    out = tmp_path_factory.mktemp("compiled")
    artifact = compile_config(exported, CompileConfig(target="onnxruntime", precision="fp32"), out)
    baseline = BaselineResult(
        framework="pytorch",
        predictions=baseline_predictions(exported, dataset_ref, out),
        benchmark=BenchmarkResult(subject="baseline", status="ok"),
    )
    validation = validate_artifact(artifact, dataset_ref, baseline, out)
    bench = benchmark_artifact(artifact, dataset_ref, [1, 4])
    key = artifact.config.key
    (outcome,) = gate_all([artifact], {key: validation}, {key: bench}, PipelineParams(), out / "gate")
    return outcome, baseline


def test_register_creates_one_candidate_version_per_pipeline_run_and_it_serves(
    local_services, exported, dataset_ref, compiled_outcome
):
    from tasks.tracking import record

    outcome, baseline = compiled_outcome
    ctx = RunContext(run_id="test-register", run_dir=str(run_dir_for("test-register")), params=PipelineParams())
    _, recorded = record(local_services, ctx, exported, dataset_ref, baseline, [outcome], {})
    first = register(local_services, ctx, exported, recorded[0])
    again = register(local_services, ctx, exported, recorded[0])  # a retried task
    assert first.version == again.version
    client = mlflow.MlflowClient(local_services.mlflow_tracking_uri)
    versions = client.search_model_versions(f"name = '{exported.name}'")
    assert [v.version for v in versions if v.tags.get("pipeline_run_id") == "test-register"] == [first.version]
    version = client.get_model_version_by_alias(exported.name, "candidate")
    assert version.version == first.version
    assert version.tags["target"] == "onnxruntime" and version.tags["validation"] == "pass"

    model = mlflow.pyfunc.load_model(f"models:/{exported.name}@candidate")
    inputs = load(dataset_ref).inputs(0, 3)
    logits = model.predict(inputs)
    assert logits.shape == (3, 1000)
    assert int(np.argmax(logits[0])) in {281, 282, 285}


def test_promote_writes_files_then_manifest_and_never_overwrites(local_services, exported, compiled_outcome, tmp_path):
    from tasks.records import Registration

    outcome, _ = compiled_outcome
    artifact = outcome.compiled
    registration = Registration(
        registered_model=exported.name,
        version="41",
        alias="candidate",
        model_uri="models:/x/41",
        run_id="r",
        config=artifact.config,
    )
    promotion = promote(local_services, exported, artifact, registration)
    assert promotion.uri == f"s3://{local_services.serving_bucket}/{local_services.serving_prefix}/{exported.name}/41/"
    client = s3_client(local_services)
    prefix = f"{local_services.serving_prefix}/{exported.name}/41/"
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=local_services.serving_bucket, Prefix=prefix)["Contents"]}
    assert keys == {prefix + "model.onnx", prefix + "manifest.json"}
    manifest = json.loads(
        client.get_object(Bucket=local_services.serving_bucket, Key=prefix + "manifest.json")["Body"].read()
    )
    assert manifest["files"][0]["path"] == "model.onnx" and len(manifest["files"][0]["sha256"]) == 64
    assert manifest["mlflow"]["version"] == "41" and manifest["source_sha256"] == exported.source_sha256

    assert promote(local_services, exported, artifact, registration).manifest == manifest  # idempotent retry
    other_dir = tmp_path / "other"
    shutil.copytree(local_path(artifact.uri), other_dir)
    (other_dir / "model.onnx").write_bytes(b"another model")
    changed = artifact.model_copy(update={"uri": to_uri(other_dir), "sha256": tree_sha256(other_dir)})
    with pytest.raises(PromotionError, match="never overwritten"):
        promote(local_services, exported, changed, registration)


def test_promote_to_a_missing_bucket_names_it(local_services, exported, compiled_outcome, monkeypatch):
    from tasks.records import Registration

    monkeypatch.setenv("SERVING_BUCKET", "no-such-bucket")
    outcome, _ = compiled_outcome
    registration = Registration(
        registered_model=exported.name,
        version="1",
        alias="candidate",
        model_uri="m",
        run_id="r",
        config=outcome.compiled.config,
    )
    with pytest.raises(PromotionError, match="bucket 'no-such-bucket' is not reachable"):
        promote(load_settings(), exported, outcome.compiled, registration)
