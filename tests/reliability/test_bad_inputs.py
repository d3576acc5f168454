"""Bad input (issue 8): each is refused with an error that names the problem, at the earliest stage that can
tell, and leaves nothing half-written. Counted in the session's closing reliability line."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from devtools.services import LOCAL_CREDENTIALS
from tasks.compile.cache import LocalCache
from tasks.compile.run import compile_config
from tasks.core.faults import ServiceUnreachable, named_unreachable
from tasks.core.params import PipelineParams
from tasks.core.records import CompileConfig
from tasks.core.settings import PROJECT_ROOT
from tasks.core.settings import load as load_settings
from tasks.serving.store import PromotionError, Store
from tasks.sources.export import InputSpecError, ModelLoadError, export_model, resolve_source

pytestmark = pytest.mark.reliability


def onnx_file(path: Path, nodes: list, domains: dict[str, int] | None = None, width: int = 4) -> Path:
    """A small ONNX model: input [batch, width] float -> output ``scores``, through ``nodes``."""
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", width])],
    )
    opsets = [helper.make_opsetid(domain, version) for domain, version in {"": 17, **(domains or {})}.items()]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def model_files(tmp_path_factory) -> dict[str, Path]:
    """One good file of each source format: a state dict, TorchScript, ONNX and a SavedModel."""
    import tensorflow as tf

    root = tmp_path_factory.mktemp("good-models")
    state = resolve_source("builtin:mobilenet_v2")
    script = root / "model.torchscript.pt"
    torch.jit.save(torch.jit.script(torch.nn.Sequential(torch.nn.Linear(4, 4)).eval()), script)
    relu = onnx_file(root / "relu.onnx", [helper.make_node("Relu", ["input"], ["scores"])])

    class Scale(tf.Module):
        def __init__(self):
            self.w = tf.Variable(tf.ones([4]))

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="input")])
        def serve(self, input):  # noqa: A002 - the signature's input name
            return {"scores": input * self.w}

    module = Scale()
    tf.saved_model.save(module, str(root / "saved_model"), signatures={"serving_default": module.serve})
    tf.saved_model.save(module, str(root / "no_signature"), signatures={})
    return {"pytorch": state, "torchscript": script, "onnx": relu, "tensorflow": root / "saved_model", "root": root}


SPECS = [{"name": "input", "shape": ["batch", 4], "dtype": "float32"}]


def params_for(framework: str, uri: Path | str, **extra) -> PipelineParams:
    more = {"input_specs": SPECS, "trust_model_code": True} if framework == "torchscript" else {}
    return PipelineParams(model_name="bad-input", model_uri=str(uri), framework=framework, **more, **extra)


def damage(source: Path, how: str, dest: Path) -> Path:
    """A missing, empty, truncated or corrupt copy of ``source`` (for a SavedModel: of its graph file)."""
    if source.is_dir():
        shutil.copytree(source, dest)
        target = dest / "saved_model.pb"
        if how == "missing":
            shutil.rmtree(dest)
        elif how == "empty":
            target.write_bytes(b"")
        elif how == "truncated":
            target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
        elif how == "corrupt":
            target.write_bytes(os.urandom(target.stat().st_size))
        elif how == "no-variables":
            shutil.rmtree(dest / "variables")
        return dest
    if how == "missing":
        return dest
    data = source.read_bytes()
    dest.write_bytes({"empty": b"", "truncated": data[: len(data) // 2], "corrupt": os.urandom(len(data))}[how])
    return dest


MODEL_DEFECTS = [
    ("pytorch", "missing", "does not exist"),
    ("pytorch", "empty", "is empty"),
    ("pytorch", "truncated", "truncated or corrupt"),
    ("pytorch", "corrupt", "truncated or corrupt"),
    ("torchscript", "missing", "does not exist"),
    ("torchscript", "empty", "not a loadable TorchScript file"),
    ("torchscript", "truncated", "not a loadable TorchScript file"),
    ("torchscript", "corrupt", "not a loadable TorchScript file"),
    ("onnx", "missing", "does not exist"),
    ("onnx", "empty", "not a valid ONNX model"),
    ("onnx", "truncated", "not a valid ONNX model"),
    ("onnx", "corrupt", "not a valid ONNX model"),
    ("tensorflow", "missing", "not a SavedModel directory"),
    ("tensorflow", "empty", "cannot load the SavedModel"),
    ("tensorflow", "truncated", "cannot load the SavedModel"),
    ("tensorflow", "corrupt", "cannot load the SavedModel"),
    ("tensorflow", "no-variables", "cannot load the SavedModel"),
]


@pytest.mark.parametrize(("framework", "defect", "named"), MODEL_DEFECTS, ids=[f"{f}-{d}" for f, d, _ in MODEL_DEFECTS])
def test_a_damaged_model_file_is_refused_by_name_and_leaves_no_export(
    framework, defect, named, model_files, tmp_path, reliability
):
    reliability.bad_inputs += 1
    bad = damage(model_files[framework], defect, tmp_path / f"model-{defect}{model_files[framework].suffix}")
    with pytest.raises(ModelLoadError, match=named) as caught:
        export_model(params_for(framework, bad), tmp_path / "export")
    assert str(bad) in str(caught.value)  # the error names the file
    assert not (tmp_path / "export").exists()  # nothing half-written


@pytest.mark.parametrize(
    ("legacy", "protocol"), [(False, 2), (False, 5), (True, 2)], ids=["zip", "zip-protocol-5", "legacy"]
)
def test_a_pickle_carrying_code_is_refused_without_being_unpickled(legacy, protocol, tmp_path, reliability):
    reliability.bad_inputs += 1
    witness = tmp_path / "code-ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {witness}",))

    path = tmp_path / "weights.pth"
    state = {"features.0.weight": torch.ones(2), "x": Payload()}
    torch.save(state, path, _use_new_zipfile_serialization=not legacy, pickle_protocol=protocol)
    with pytest.raises(ModelLoadError, match=r"carries code \(its pickle imports (posix|os)\.system\)") as caught:
        export_model(params_for("pytorch", path), tmp_path / "export")
    assert "never unpickled" in str(caught.value)
    assert not witness.exists()


def test_a_code_carrying_format_needs_an_explicit_opt_in_per_model(model_files, tmp_path, reliability):
    reliability.bad_inputs += 1
    refused = PipelineParams(
        model_name="scripted", model_uri=str(model_files["torchscript"]), framework="torchscript", input_specs=SPECS
    )
    with pytest.raises(ModelLoadError, match="carries code.*trust_model_code=true"):
        export_model(refused, tmp_path / "refused")
    trusted = export_model(refused.model_copy(update={"trust_model_code": True}), tmp_path / "trusted")
    assert "TorchScript program from the model file runs" in trusted.model_code
    # the default sources load nothing that runs: weights-only state dicts, ONNX and SavedModel graphs
    assert export_model(params_for("onnx", model_files["onnx"]), tmp_path / "onnx").model_code == ""


def test_a_savedmodel_without_a_serving_signature_is_refused(model_files, tmp_path, reliability):
    reliability.bad_inputs += 1
    with pytest.raises(ModelLoadError, match="has no 'serving_default' signature"):
        export_model(params_for("tensorflow", model_files["root"] / "no_signature"), tmp_path / "export")


@pytest.mark.parametrize(
    ("framework", "specs", "named"),
    [
        ("onnx", [{"name": "input", "shape": ["batch", 5], "dtype": "float32"}], "do not match the inputs"),
        ("onnx", [{"name": "pixels", "shape": ["batch", 4], "dtype": "float32"}], "do not match the inputs"),
        ("tensorflow", [{"name": "input", "shape": ["batch", 4], "dtype": "int64"}], "do not match the inputs"),
        ("torchscript", [{"name": "input", "shape": ["batch", 7], "dtype": "float32"}], "forward pass fails"),
        ("torchscript", [{"name": "input", "shape": [1, 4], "dtype": "float32"}], "no batch dimension"),
        ("torchscript", [{"name": "input", "shape": ["batch", 4], "dtype": "complex64"}], "has dtype 'complex64'"),
    ],
)
def test_input_specs_that_do_not_fit_the_model_are_refused(framework, specs, named, model_files, tmp_path, reliability):
    reliability.bad_inputs += 1
    params = params_for(framework, model_files[framework]).model_copy(update={"input_specs": specs})
    params = PipelineParams.model_validate(params.to_json())
    with pytest.raises((InputSpecError, ModelLoadError), match=named):
        export_model(params, tmp_path / "export")


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_a_model_that_outputs_nan_or_inf_is_refused_at_export(value, tmp_path, reliability):
    reliability.bad_inputs += 1
    # sqrt(-|x| - 1) is NaN everywhere; 1 / (x - x) is Inf
    nodes = {
        "nan": [
            helper.make_node("Abs", ["input"], ["a"]),
            helper.make_node("Neg", ["a"], ["n"]),
            helper.make_node("Constant", [], ["one"], value=helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])),
            helper.make_node("Sub", ["n", "one"], ["m"]),
            helper.make_node("Sqrt", ["m"], ["scores"]),
        ],
        "inf": [
            helper.make_node("Sub", ["input", "input"], ["zero"]),
            helper.make_node("Reciprocal", ["zero"], ["scores"]),
        ],
    }[value]
    path = onnx_file(tmp_path / f"{value}.onnx", nodes)
    with pytest.raises(ModelLoadError, match="holds NaN or Inf"):
        export_model(params_for("onnx", path), tmp_path / "export")
    assert not (tmp_path / "export").exists()


def test_an_operator_one_target_cannot_compile_fails_that_config_by_name_and_the_others_go_on(tmp_path, reliability):
    """ai.onnx.ml Scaler: ONNX Runtime runs it, OpenVINO has no conversion for it."""
    reliability.bad_inputs += 1
    scaler = helper.make_node("Scaler", ["input"], ["scaled"], domain="ai.onnx.ml", offset=[0.0] * 4, scale=[2.0] * 4)
    path = onnx_file(
        tmp_path / "scaler.onnx", [scaler, helper.make_node("Relu", ["scaled"], ["scores"])], {"ai.onnx.ml": 3}
    )
    exported = export_model(params_for("onnx", path), tmp_path / "export")
    cache = LocalCache(tmp_path / "cache")
    openvino = compile_config(exported, CompileConfig(target="openvino", precision="fp32"), tmp_path / "c", cache=cache)
    ort = compile_config(exported, CompileConfig(target="onnxruntime", precision="fp32"), tmp_path / "c", cache=cache)
    assert openvino.status == "failed"
    assert "OpenVINO cannot convert operator(s) ai.onnx.ml.Scaler" in openvino.reason
    assert not (tmp_path / "c" / "openvino-fp32").exists() and not list((tmp_path / "c").glob(".*partial"))
    assert ort.status == "ok", ort.reason


def _npz(path: Path, **arrays) -> str:
    np.savez(path, **arrays)
    return str(path)


def _photo_dir(path: Path, rows: str) -> str:
    from skimage import data
    from skimage.io import imsave

    path.mkdir()
    imsave(path / "cat.png", data.chelsea())
    (path / "labels.csv").write_text(rows)
    return str(path)


DATASET_DEFECTS = [
    ("empty .npz", lambda d: _npz(d / "e.npz", input=np.zeros((0, 3, 224, 224), np.float32)), "holds no samples"),
    (
        "labels out of range",
        lambda d: _npz(d / "l.npz", input=np.zeros((2, 3, 224, 224), np.float32), labels=np.array([3, 1000])),
        r"labels must be class ids 0\.\.999",
    ),
    (
        "negative label",
        lambda d: _npz(d / "n.npz", input=np.zeros((2, 3, 224, 224), np.float32), labels=np.array([-1, -1])),
        "have no label",
    ),
    (
        "label file names a missing image",
        lambda d: _photo_dir(d / "p", "cat.png,tabby\ndog.png,beagle\n"),
        "dog.png does not exist",
    ),
    ("label file lists no images", lambda d: _photo_dir(d / "q", "file,label\n"), "lists no images"),
    (
        "unknown class name",
        lambda d: _photo_dir(d / "r", "cat.png,not-a-class\n"),
        "neither a class id nor an ImageNet",
    ),
    ("missing .npz", lambda d: str(d / "absent.npz"), "does not exist"),
]


@pytest.mark.parametrize(("case", "make", "named"), DATASET_DEFECTS, ids=[c for c, _, _ in DATASET_DEFECTS])
def test_a_bad_validation_set_is_refused_by_name_before_any_compile(case, make, named, exported, tmp_path, reliability):
    from tasks.datasets import prepare as datasets

    reliability.bad_inputs += 1
    spec = make(tmp_path)
    with pytest.raises(ValueError, match=named):
        datasets.prepare(spec, tmp_path / "prepared", exported)
    assert not (tmp_path / "prepared" / "dataset.npz").exists()


BAD_PARAMS = [
    ({"top5_tolerance_pp": -1}, "top5_tolerance_pp"),
    ({"atol": -0.1}, "atol"),
    ({"batch_sizes": [0]}, "batch sizes must be between 1 and 1024"),
    ({"batch_sizes": []}, "batch_sizes"),
    ({"targets": ["tpu-v5"]}, "unknown target"),
    ({"precisions": ["fp8"]}, "unknown precision"),
    ({"latency_budget_ms": 0}, "latency_budget_ms"),
    ({"latency_budget_ms": -5}, "latency_budget_ms"),
    ({"selection": "max_throughput_under_latency"}, "needs latency_budget_ms"),
    ({"framework": "caffe"}, "framework"),
    ({"model_name": "team/model"}, "model_name 'team/model' must be"),
    ({"model_name": "../../etc"}, "model_name"),
    ({"model_name": "my model"}, "model_name"),
    ({"model_name": "model\x00"}, "model_name"),
    ({"model_name": "model\nname"}, "model_name"),
    ({"model_name": ".."}, "model_name"),
    ({"model_name": ""}, "model_name"),
    ({"model_uri": "builtin:no_such_model"}, "unknown built-in model"),
]


@pytest.mark.parametrize(
    ("change", "named"), BAD_PARAMS, ids=[next(iter(c)) + f"={c[next(iter(c))]!r}" for c, _ in BAD_PARAMS]
)
def test_invalid_params_fail_the_start_stage_by_name_and_nothing_runs(change, named, tmp_path, reliability):
    from tasks.core import store
    from tasks.stages import compile_pipeline as stages
    from tasks.stages.runner import run_uri_for

    reliability.bad_inputs += 1
    run_id = f"bad-params-{abs(hash(repr(change)))}"
    with pytest.raises(Exception, match=named):
        ctx = stages.start.run({**PipelineParams().to_json(), **change}, run_id)
        stages.export.run(ctx)  # a built-in name is checked where it is resolved
    run_uri = run_uri_for(run_id)
    assert not store.list_files(store.join(run_uri, "export"))  # no stage after the one that refused it ran


@pytest.mark.parametrize("name", ["../escape", "a/b", "a b", "tab\tname", "..", "ok/../../x"])
def test_a_name_that_would_escape_its_s3_prefix_is_refused_before_any_request(name, reliability, monkeypatch):
    reliability.bad_inputs += 1
    with pytest.raises(PromotionError, match="model name"):
        Store(load_settings(), name)
    if any(not part or " " in part or "\t" in part or ".." in part for part in name.split("/")):
        monkeypatch.setenv("SERVING_PREFIX", f"models/{name}")
        with pytest.raises(PromotionError, match="SERVING_PREFIX segment"):
            Store(load_settings(), "fine-name")


def test_an_experiment_name_with_control_characters_is_refused(monkeypatch, reliability):
    reliability.bad_inputs += 1
    monkeypatch.setenv("MLFLOW_EXPERIMENT", "compile\x1b[31mpipeline")
    with pytest.raises(ValueError, match="MLFLOW_EXPERIMENT"):
        load_settings()


class Blackhole:
    """A TCP port that accepts connections and closes them at once: a service that is down mid-restart."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self):
        self.sock.close()


def test_unreachable_mlflow_and_s3_are_retried_with_backoff_then_named(monkeypatch, reliability):
    from tasks.stages.promote_model import find

    hole = Blackhole()
    try:
        url = f"http://127.0.0.1:{hole.port}"
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")  # urllib3: no wait, then 2 s
        with pytest.raises(ServiceUnreachable, match=f"MLflow tracking server {url} is unreachable"):
            find.run({"model_name": "mobilenet"})
        assert hole.connections >= 3  # retried, not given up on the first refusal
        reliability.faults += 1

        before = hole.connections
        for name, value in LOCAL_CREDENTIALS.items():  # any will do; without them boto3 stops before connecting
            monkeypatch.setenv(name, os.environ.get(name, value))
        monkeypatch.setenv("S3_ENDPOINT_URL", url)
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "3")
        with pytest.raises(ServiceUnreachable, match=f"S3 endpoint {url} is unreachable"):
            with named_unreachable(load_settings()):
                Store(load_settings(), "mobilenet")
        assert hole.connections - before >= 3
        reliability.faults += 1
    finally:
        hole.close()


FILL_DISK_DURING_COMPILE = """
import json, os, sys, threading, time
from pathlib import Path
from tasks.compile.run import compile_config
from tasks.compile.cache import LocalCache
from tasks.core.files import tree_sha256
from tasks.core.records import CompileConfig, ExportedModel

exported = ExportedModel.model_validate_json(Path(sys.argv[1]).read_text())
disk = Path(sys.argv[2])
config = CompileConfig(target="onnxruntime", precision="fp32")
cache = LocalCache(disk / "cache")

def fill_when_compiling():  # another writer takes the rest of the disk once the compile has started
    while not (disk / "out" / f".{config.key}.partial").exists():
        time.sleep(0.005)
    with open(disk / "filler", "wb") as filler:
        try:
            while True:
                filler.write(b"\\0" * (1 << 20))
                filler.flush()
        except OSError:
            pass

threading.Thread(target=fill_when_compiling, daemon=True).start()
full = compile_config(exported, config, disk / "out", cache=cache)
after_full = sorted(p.name for p in (disk / "out").iterdir())
cached_when_full = sorted(p.name for p in (disk / "cache").glob("*")) if (disk / "cache").exists() else []
(disk / "filler").unlink()
again = compile_config(exported, config, disk / "out", cache=cache)
print(json.dumps({"full": full.status, "reason": full.reason, "left": after_full, "cached": cached_when_full,
                  "again": again.status, "again_sha_ok": tree_sha256(Path(again.uri.removeprefix("file://"))) == again.sha256}))
"""


def test_a_disk_that_fills_during_compile_fails_the_config_by_name_and_leaves_nothing_half_written(
    exported, tmp_path, reliability
):
    """The compile runs on a 64 MiB tmpfs of its own (a mount namespace: no root needed where user namespaces are on)."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed")
    reliability.bad_inputs += 1
    record = tmp_path / "exported.json"
    record.write_text(exported.model_dump_json())
    disk = tmp_path / "disk"
    disk.mkdir()
    (tmp_path / "fill_disk.py").write_text(FILL_DISK_DURING_COMPILE)
    script = f"mount -t tmpfs -o size=64m tmpfs {disk} && {sys.executable} {tmp_path / 'fill_disk.py'} {record} {disk}"
    result = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    import json

    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["full"] == "failed"
    assert outcome["reason"].startswith("disk full:") and str(disk / "out") in outcome["reason"]
    # no artifact, no scratch directory, no request file; the cache holds no entry from the failed compile
    assert [name for name in outcome["left"] if not name.endswith(".compile.log")] == []
    assert outcome["cached"] == []
    assert outcome["again"] == "ok" and outcome["again_sha_ok"]
