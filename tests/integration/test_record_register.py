"""Against the real local services: moto's S3 server and an MLflow tracking server."""

import json
import os
import socket
import subprocess
import sys

import mlflow
import numpy as np
import pytest

from devtools import services
from tasks.core.params import PipelineParams
from tasks.core.records import RunContext
from tasks.core.settings import PROJECT_ROOT
from tasks.core.settings import load as load_settings
from tasks.datasets.prepare import load
from tasks.stages.compile_pipeline.register import register
from tasks.stages.runner import run_uri_for

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


def test_register_creates_one_candidate_version_per_pipeline_run_and_it_serves(
    local_services, exported, dataset_ref, compiled_outcome, tmp_path
):
    from tasks.stages.compile_pipeline.record import record

    outcome, baseline = compiled_outcome
    ctx = RunContext(run_id="test-register", run_uri=run_uri_for("test-register"), params=PipelineParams())
    parent, recorded = record(local_services, ctx, exported, dataset_ref, [baseline], [outcome], {})
    first = register(local_services, ctx, exported, recorded[0], dataset=dataset_ref, parent_run_id=parent)
    again = register(local_services, ctx, exported, recorded[0], dataset=dataset_ref, parent_run_id=parent)  # a retry
    assert first.version == again.version
    client = mlflow.MlflowClient(local_services.mlflow_tracking_uri)
    versions = client.search_model_versions(f"name = '{exported.name}'")
    assert [v.version for v in versions if v.tags.get("pipeline_run_id") == "test-register"] == [first.version]
    version = client.get_model_version_by_alias(exported.name, "candidate")
    assert version.version == first.version
    assert version.tags["target"] == "onnxruntime" and version.tags["validation"] == "pass"
    for tag in ("precision", "batch_size", "throughput", "latency_ms_p99", "top5_delta_pp", "top5_agreement",
                "compiler", "source_run", "source_sha256"):  # fmt: skip
        assert version.tags[tag], tag
    # what a reviewer decides from: the tables and links to the evidence
    assert "| CPU baseline |" in version.description and "| onnxruntime-fp32 |" in version.description
    assert "| batch x streams | samples/s |" in version.description
    assert (
        f"runs/{parent}/artifacts/gate" in version.description and "compile/compile_report.json" in version.description
    )
    samples = mlflow.artifacts.download_artifacts(run_id=version.run_id, artifact_path="smoke/samples.npz")
    assert np.load(samples)["output:logits"].shape == (16, 1000)

    # Loaded as serving would: a fresh interpreter whose only `tasks` is the code the registered model carries.
    np.savez(tmp_path / "inputs.npz", **load(dataset_ref).inputs(0, 3))
    script = (
        "import json, sys, numpy as np, mlflow.pyfunc\n"
        f"model = mlflow.pyfunc.load_model('models:/{exported.name}@candidate')\n"
        "logits = model.predict(dict(np.load('inputs.npz')))\n"
        "import tasks\n"
        "print(json.dumps({'shape': list(logits.shape), 'top1': int(np.argmax(logits[0])), 'code': tasks.__file__}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    served = json.loads(out.stdout.strip().splitlines()[-1])
    assert served["shape"] == [3, 1000]
    assert served["top1"] in {281, 282, 285}
    assert str(PROJECT_ROOT) not in served["code"]  # the model's own code/, not this checkout


def test_a_model_on_s3_is_exported_like_a_local_one(local_services, exported, tmp_path):
    from tasks.core.files import local_path, sha256_file
    from tasks.core.storage import s3_client
    from tasks.sources.export import ModelLoadError, export_model

    client = s3_client(local_services)
    client.create_bucket(Bucket="trained-models")
    onnx = local_path(exported.formats["onnx"].uri)
    client.upload_file(str(onnx), "trained-models", "mobilenet/model.onnx")
    params = PipelineParams(
        model_name="from-s3", model_uri="s3://trained-models/mobilenet/model.onnx", framework="onnx"
    )
    from_s3 = export_model(params, tmp_path / "export")
    assert from_s3.source_uri == "s3://trained-models/mobilenet/model.onnx"
    assert from_s3.source_sha256 == sha256_file(onnx) and from_s3.inputs == exported.inputs
    with pytest.raises(ModelLoadError, match="model s3://trained-models/missing.onnx does not exist"):
        export_model(params.model_copy(update={"model_uri": "s3://trained-models/missing.onnx"}), tmp_path / "missing")


def test_a_registered_onnx_model_is_a_source(local_services, exported, tmp_path):
    import onnx

    from tasks.core.files import local_path
    from tasks.sources.export import ModelLoadError, export_model

    mlflow.set_tracking_uri(local_services.mlflow_tracking_uri)
    with mlflow.start_run():
        mlflow.onnx.log_model(onnx.load(local_path(exported.formats["onnx"].uri)), name="model",
                              registered_model_name="trained-onnx")  # fmt: skip
    params = PipelineParams(model_name="from-registry", model_uri="models:/trained-onnx/1", framework="onnx")
    from_registry = export_model(params, tmp_path / "export")
    assert from_registry.source_uri == "models:/trained-onnx/1" and from_registry.inputs == exported.inputs
    with pytest.raises(ModelLoadError, match="is read as ONNX: set framework to onnx"):
        export_model(params.model_copy(update={"framework": "pytorch"}), tmp_path / "pytorch")
    with pytest.raises(ModelLoadError, match="registered model models:/no-such-model/1 cannot be read"):
        export_model(params.model_copy(update={"model_uri": "models:/no-such-model/1"}), tmp_path / "missing")
