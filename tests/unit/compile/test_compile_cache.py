import json

import pytest

from tasks.compile.cache import LocalCache, S3Cache, cache_key, open_cache
from tasks.compile.run import compile_config
from tasks.core.files import local_path
from tasks.core.params import PipelineParams
from tasks.core.records import CompileConfig
from tasks.sources.export import export_model
from tasks.targets import get


def test_cache_key_changes_with_everything_the_artifact_depends_on(exported):
    config = CompileConfig(target="onnxruntime", precision="fp32")
    fingerprint = get("onnxruntime").fingerprint(exported, config)
    key = cache_key(exported, config, fingerprint)
    assert key == cache_key(exported, config, fingerprint)
    other_flags = fingerprint.model_copy(update={"flags": ["graph_optimization_level=ORT_ENABLE_ALL"]})
    other_version = fingerprint.model_copy(update={"compiler_version": "0.0.1"})
    other_source = exported.model_copy(update={"source_sha256": "0" * 64})
    other_graph = exported.model_copy(update={"graph_sha256": {**exported.graph_sha256, "onnx": "0" * 64}})
    keys = {
        key,
        cache_key(exported, config, other_flags),
        cache_key(exported, config, other_version),
        cache_key(other_source, config, fingerprint),
        cache_key(other_graph, config, fingerprint),
        cache_key(exported, CompileConfig(target="onnxruntime", precision="fp32", batch_size=8), fingerprint),
        cache_key(exported, config, fingerprint, calibration_sha256="1" * 64),
    }
    assert len(keys) == 7
    assert exported.exporter["code_sha256"] and exported.exporter["torch"]


def test_cache_key_ignores_bytes_a_conversion_does_not_reproduce(exported):
    # the same source through the same exporter is the same model, whatever names a converter generated
    config = CompileConfig(target="onnxruntime", precision="fp32")
    fingerprint = get("onnxruntime").fingerprint(exported, config)
    reconverted = exported.model_copy(
        update={
            "formats": {**exported.formats, "onnx": exported.formats["onnx"].model_copy(update={"sha256": "0" * 64})}
        }
    )
    assert cache_key(reconverted, config, fingerprint) == cache_key(exported, config, fingerprint)


def test_second_compile_is_a_cache_hit_and_a_corrupt_entry_is_rebuilt(exported, tmp_path):
    cache = LocalCache(tmp_path / "cache")
    config = CompileConfig(target="openvino", precision="fp32")
    first = compile_config(exported, config, tmp_path / "run1", cache=cache)
    assert first.status == "ok" and first.cache == "miss"
    second = compile_config(exported, config, tmp_path / "run2", cache=cache)
    assert second.cache == "hit" and second.sha256 == first.sha256
    assert second.report == first.report and second.compile_seconds == first.compile_seconds

    # flip bytes in the cached weights: the entry must be detected, never used, and rebuilt
    weights = tmp_path / "cache" / first.cache_key / "files" / "model.bin"
    data = bytearray(weights.read_bytes())
    data[100] ^= 0xFF
    weights.write_bytes(bytes(data))
    third = compile_config(exported, config, tmp_path / "run3", cache=cache)
    assert third.cache == "rebuilt" and third.sha256 == first.sha256
    assert "sha256 mismatch" in local_path(third.log_uri).read_text()
    fourth = compile_config(exported, config, tmp_path / "run4", cache=cache)
    assert fourth.cache == "hit"


def test_a_failed_compile_is_never_cached(exported, tmp_path):
    cache = LocalCache(tmp_path / "cache")
    failed = compile_config(
        exported, CompileConfig(target="onnxruntime", precision="fp32"), tmp_path, timeout_s=0, cache=cache
    )
    assert failed.status == "failed" and "timed out" in failed.reason
    assert not any((tmp_path / "cache").glob("*/entry.json"))


@pytest.mark.integration
def test_the_cache_can_live_on_s3_so_workers_share_it(exported, tmp_path, local_services):
    from tasks.core.storage import s3_client

    s3_client(local_services).create_bucket(Bucket="compile-cache")
    cache = open_cache("s3://compile-cache/entries", local_services.s3_endpoint_url)
    assert isinstance(cache, S3Cache)
    config = CompileConfig(target="onnxruntime", precision="fp32")
    first = compile_config(exported, config, tmp_path / "worker-a", cache=cache)
    second = compile_config(exported, config, tmp_path / "worker-b", cache=cache)
    assert (first.cache, second.cache) == ("miss", "hit") and first.sha256 == second.sha256
    entry = s3_client(local_services).get_object(Bucket="compile-cache", Key=f"entries/{first.cache_key}/entry.json")
    assert json.loads(entry["Body"].read())["tree_sha256"] == first.sha256


def test_a_factory_whose_weights_change_misses_the_cache(tmp_path, monkeypatch):
    """``module:`` sources: the key covers the weights the factory loaded, not only the factory's code."""
    import torch

    (tmp_path / "weighted_factory.py").write_text(
        "import pathlib, torch\n"
        "def build():\n"
        "    model = torch.nn.Linear(4, 3)\n"
        "    path = pathlib.Path(__file__).with_name('weights.pt')\n"
        "    model.load_state_dict(torch.load(path, weights_only=True))\n"
        "    return model.eval()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    weights = tmp_path / "weights.pt"
    torch.manual_seed(0)
    torch.save(torch.nn.Linear(4, 3).state_dict(), weights)
    params = PipelineParams(
        model_uri="module:weighted_factory:build",
        input_specs=[{"name": "x", "shape": ["batch", 4], "dtype": "float32"}],
        trust_model_code=True,  # the test's own factory, outside TRUSTED_CODE_MODULES
    )
    cache = LocalCache(tmp_path / "cache")
    config = CompileConfig(target="onnxruntime", precision="fp32")
    first = compile_config(export_model(params, tmp_path / "e1"), config, tmp_path / "c1", cache=cache)
    again = compile_config(export_model(params, tmp_path / "e2"), config, tmp_path / "c2", cache=cache)
    assert (first.cache, again.cache, again.cache_key) == ("miss", "hit", first.cache_key)

    torch.save(torch.nn.Linear(4, 3).state_dict(), weights)  # new weights, the factory's code unchanged
    changed = compile_config(export_model(params, tmp_path / "e3"), config, tmp_path / "c3", cache=cache)
    assert changed.cache == "miss" and changed.cache_key != first.cache_key


def test_a_factory_whose_imported_architecture_changes_misses_the_cache(tmp_path, monkeypatch):
    """The factory's own file and its weights unchanged, the architecture in a module it imports changed (its
    logits scaled by 3): the exported graph differs, so the key does; the stale artifact is never reused."""
    import sys

    import torch

    (tmp_path / "scaled_arch.py").write_text(
        "import torch\n"
        "SCALE = 1.0\n"
        "class Net(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.fc = torch.nn.Linear(4, 3)\n"
        "    def forward(self, x):\n"
        "        return self.fc(x) * SCALE\n"
    )
    (tmp_path / "scaled_factory.py").write_text(
        "import pathlib, torch\n"
        "from scaled_arch import Net\n"
        "def build():\n"
        "    model = Net()\n"
        "    model.load_state_dict(torch.load(pathlib.Path(__file__).with_name('net.pt'), weights_only=True))\n"
        "    return model.eval()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    torch.manual_seed(0)
    torch.save({f"fc.{k}": v for k, v in torch.nn.Linear(4, 3).state_dict().items()}, tmp_path / "net.pt")
    params = PipelineParams(
        model_uri="module:scaled_factory:build",
        input_specs=[{"name": "x", "shape": ["batch", 4], "dtype": "float32"}],
        trust_model_code=True,
    )
    cache = LocalCache(tmp_path / "cache")
    config = CompileConfig(target="onnxruntime", precision="fp32")
    before = export_model(params, tmp_path / "e1")
    first = compile_config(before, config, tmp_path / "c1", cache=cache)

    arch = tmp_path / "scaled_arch.py"
    arch.write_text(arch.read_text().replace("SCALE = 1.0", "SCALE = 3.0"))
    for name in ("scaled_arch", "scaled_factory"):  # a new task process imports them afresh
        monkeypatch.delitem(sys.modules, name, raising=False)
    after = export_model(params, tmp_path / "e2")
    assert after.source_sha256 == before.source_sha256  # what the old key followed did not change...
    assert after.graph_sha256["onnx"] != before.graph_sha256["onnx"]  # ...what the compiler reads did
    changed = compile_config(after, config, tmp_path / "c2", cache=cache)
    assert (first.cache, changed.cache) == ("miss", "miss") and changed.cache_key != first.cache_key


def test_the_onnx_graph_digest_ignores_names_and_follows_weights(exported, tmp_path):
    """Renamed intermediate tensors and nodes (what tf2onnx does from run to run) are the same model; one changed
    weight is another."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from tasks.sources.graph_digest import onnx_graph_sha256

    original = local_path(exported.formats["onnx"].uri)
    model = onnx.load(str(original))
    interface = {v.name for v in model.graph.input} | {v.name for v in model.graph.output}
    renamed = {n: f"renamed_{i}" for i, n in enumerate(o for node in model.graph.node for o in node.output)
               if n not in interface}  # fmt: skip
    for node in model.graph.node:
        node.name = f"node_{id(node)}"
        node.input[:] = [renamed.get(n, n) for n in node.input]
        node.output[:] = [renamed.get(n, n) for n in node.output]
    onnx.save(model, str(tmp_path / "renamed.onnx"))
    assert (tmp_path / "renamed.onnx").read_bytes() != original.read_bytes()
    assert onnx_graph_sha256(tmp_path / "renamed.onnx") == onnx_graph_sha256(original)

    weight = model.graph.initializer[0]
    values = numpy_helper.to_array(weight).copy()
    values.flat[0] += np.float32(1e-3)
    weight.CopyFrom(numpy_helper.from_array(values, weight.name))
    onnx.save(model, str(tmp_path / "reweighted.onnx"))
    assert onnx_graph_sha256(tmp_path / "reweighted.onnx") != onnx_graph_sha256(original)
