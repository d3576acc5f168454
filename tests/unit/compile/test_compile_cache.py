import json

import pytest

from tasks.compile.cache import LocalCache, S3Cache, cache_key, open_cache
from tasks.compile.run import compile_config
from tasks.core.files import local_path
from tasks.core.records import CompileConfig, PipelineParams
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
    other_exporter = exported.model_copy(update={"exporter": {**exported.exporter, "onnx": "0.0.1"}})
    keys = {
        key,
        cache_key(exported, config, other_flags),
        cache_key(exported, config, other_version),
        cache_key(other_source, config, fingerprint),
        cache_key(other_exporter, config, fingerprint),
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
