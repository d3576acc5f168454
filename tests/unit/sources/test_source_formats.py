"""Model sources other than the built-in PyTorch state dict: Keras/TensorFlow, TorchScript, ONNX,
module:callable, and a multi-input integer-input text encoder judged by output closeness."""

import numpy as np
import pytest
import torch

from tasks.compile.cache import cache_key
from tasks.compile.run import compile_config
from tasks.core.cpu import has_native_bf16
from tasks.core.files import local_path
from tasks.core.params import PipelineParams, RetrainParams
from tasks.core.records import CompileConfig
from tasks.core.results import BaselineResult, BenchmarkResult
from tasks.core.schema import TensorSpec
from tasks.datasets import prepare as datasets
from tasks.sources.export import InputSpecError, ModelLoadError, export_model
from tasks.stages.compile_pipeline.gate import gate_all
from tasks.targets import get as get_target
from tasks.validation.predictions import baseline_predictions, validate_artifact

SPECS = [{"name": "x", "shape": ["batch", 4], "dtype": "float32"}]


def _through(exported, dataset_spec, configs, tmp_path):
    ref = datasets.prepare(dataset_spec, tmp_path / "data", exported)
    base = baseline_predictions(exported, ref, tmp_path / "out")
    baseline = BaselineResult(
        framework=exported.framework, predictions=base, benchmark=BenchmarkResult(subject="b", status="ok")
    )
    results = {}
    for target, precision in configs:
        artifact = compile_config(
            exported,
            CompileConfig(target=target, precision=precision),
            tmp_path / "compiled",
            calibration=local_path(ref.calibration_uri),
        )
        assert artifact.status == "ok", artifact.reason
        results[artifact.config.key] = validate_artifact(artifact, ref, baseline, tmp_path / "out")
    return base, results


@pytest.mark.slow
def test_keras_model_trained_in_the_pipeline_compiles_against_its_tensorflow_baseline(tmp_path):
    params = PipelineParams(
        model_name="digits", model_uri="builtin:keras_digits", framework="tensorflow", dataset="builtin:digits"
    )
    exported = export_model(params, tmp_path / "export")
    assert exported.inputs == [
        TensorSpec(name="image", shape=["batch", 8, 8, 1], dtype="float32")
    ]  # from the signature
    assert set(exported.formats) == {"saved_model", "onnx"}
    base, results = _through(
        exported, "builtin:digits", [("onnxruntime", "fp32"), ("openvino", "fp32"), ("onnxruntime", "int8")], tmp_path
    )
    assert base.top1 > 0.85  # TensorFlow itself on the held-out digits
    for key in ("onnxruntime-fp32", "openvino-fp32"):
        assert results[key].primary.top1_delta == 0 and results[key].primary.cosine_min > 0.9999, key
    assert results["onnxruntime-int8"].primary.top5_agreement > 0.8

    # Trained again, it is the same model to the compile cache, though tf2onnx's bytes may differ.
    again = export_model(params, tmp_path / "export-again")
    assert again.source_sha256 == exported.source_sha256
    config = CompileConfig(target="onnxruntime", precision="fp32")
    fingerprint = get_target("onnxruntime").fingerprint(exported, config)
    assert cache_key(again, config, fingerprint) == cache_key(exported, config, fingerprint)


def test_text_encoder_with_two_integer_inputs_is_judged_by_closeness(tmp_path):
    params = PipelineParams(model_name="text", model_uri="builtin:text_encoder", dataset="builtin:text")
    exported = export_model(params, tmp_path / "export")
    assert [(s.name, s.dtype) for s in exported.inputs] == [("input_ids", "int64"), ("attention_mask", "int64")]
    base, results = _through(exported, "builtin:text", [("onnxruntime", "fp32")], tmp_path)
    assert base.top1 is None and base.top5 is None  # unlabelled: no accuracy, closeness only
    fp32 = results["onnxruntime-fp32"].primary
    assert fp32.top5_delta is None and fp32.cosine_min > 0.99999 and fp32.max_abs_diff < 1e-4


@pytest.mark.skipif(not has_native_bf16(), reason="this CPU has no bf16 instructions: the plan skips bf16")
def test_a_bf16_text_encoder_passes_closeness_within_tolerance_and_fails_a_stricter_one(tmp_path):
    params = PipelineParams(model_name="text", model_uri="builtin:text_encoder", dataset="builtin:text")
    exported = export_model(params, tmp_path / "export")
    base, results = _through(exported, "builtin:text", [("openvino", "bf16")], tmp_path)
    bf16 = results["openvino-bf16"]
    assert 0.99 < bf16.primary.cosine_min < 1.0
    assert bf16.primary.out_of_tolerance == 0  # bf16 rounding (max abs diff about 3e-3) stays inside atol 1e-2

    compiled = compile_config(exported, CompileConfig(target="openvino", precision="bf16"), tmp_path / "again")
    bench = {compiled.config.key: BenchmarkResult(subject=compiled.config.key, status="ok")}
    passing = gate_all([compiled], {compiled.config.key: bf16}, bench, PipelineParams(), tmp_path / "g1")
    assert passing[0].gate == "pass", passing[0].gate_reasons
    strict = PipelineParams(min_cosine=0.999999)
    failing = gate_all([compiled], {compiled.config.key: bf16}, bench, strict, tmp_path / "g2")[0]
    assert failing.gate == "fail"
    assert failing.gate_reasons[0].startswith(
        "expect_column_values_to_be_between cosine_min >= 0.999999 (param min_cosine): observed 0.99"
    )


def test_torchscript_file_with_specs_from_params(tmp_path):
    model = torch.jit.script(torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3)).eval())
    torch.jit.save(model, tmp_path / "model.pt")
    trusted = {"model_uri": str(tmp_path / "model.pt"), "framework": "torchscript", "trust_model_code": True}
    with pytest.raises(InputSpecError, match="does not say what inputs it takes; give input_specs"):
        export_model(PipelineParams(**trusted), tmp_path / "e0")
    exported = export_model(PipelineParams(**trusted, input_specs=SPECS), tmp_path / "e1")
    assert set(exported.formats) == {"torchscript", "onnx"}
    assert "TorchScript program from the model file runs" in exported.model_code
    np.savez(tmp_path / "data.npz", x=np.random.default_rng(0).standard_normal((20, 4)).astype(np.float32))
    _, results = _through(exported, str(tmp_path / "data.npz"), [("onnxruntime", "fp32")], tmp_path)
    check = results["onnxruntime-fp32"].primary  # 3 values per sample: judged by error, not cosine
    assert check.rule == "values" and check.max_abs_diff < 1e-4 and check.out_of_tolerance == 0


def test_onnx_file_declares_its_inputs_and_a_mismatch_is_refused(tmp_path, exported):
    onnx_path = local_path(exported.formats["onnx"].uri)
    ok = export_model(PipelineParams(model_uri=str(onnx_path), framework="onnx"), tmp_path / "e1")
    assert ok.inputs == [TensorSpec(name="input", shape=["batch", 3, 224, 224], dtype="float32")]
    wrong = [{"name": "input", "shape": ["batch", 3, 299, 299], "dtype": "float32"}]
    with pytest.raises(InputSpecError, match="input_specs do not match the inputs"):
        export_model(PipelineParams(model_uri=str(onnx_path), framework="onnx", input_specs=wrong), tmp_path / "e2")
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelLoadError, match="is not a valid ONNX model"):
        export_model(PipelineParams(model_uri=str(tmp_path / "bad.onnx"), framework="onnx"), tmp_path / "e3")


def test_module_callable_source_and_its_errors(tmp_path):
    params = PipelineParams(model_uri="module:tasks.models.text_encoder:build", input_specs=[
        {"name": "input_ids", "shape": ["batch", 32], "dtype": "int64"},
        {"name": "attention_mask", "shape": ["batch", 32], "dtype": "int64"},
    ])  # fmt: skip
    exported = export_model(params, tmp_path / "e1")
    assert exported.outputs[0].shape == ["batch", 64] and "exported_program" in exported.formats
    assert exported.model_code.endswith("its module is under TRUSTED_CODE_MODULES")  # the project's own built-ins
    with pytest.raises(ModelLoadError, match="cannot import 'nope'"):
        export_model(
            PipelineParams(model_uri="module:tasks.models.text_encoder:nope", input_specs=SPECS), tmp_path / "e2"
        )
    no_batch = [{"name": "x", "shape": [2, 4], "dtype": "float32"}]
    with pytest.raises(InputSpecError, match="no batch dimension"):
        export_model(
            PipelineParams(model_uri="module:torch.nn:Identity", input_specs=no_batch, trust_model_code=True),
            tmp_path / "e3",
        )


def test_a_factory_outside_the_trusted_modules_runs_only_when_a_person_said_so(tmp_path, monkeypatch, reliability):
    """Importing a module runs its code: a module: factory outside TRUSTED_CODE_MODULES is refused, naming the module
    and both ways to allow it, before anything is imported; trust_model_code or the setting allow it."""
    (tmp_path / "team_models").mkdir()
    (tmp_path / "team_models" / "__init__.py").write_text(
        "import pathlib\npathlib.Path(__file__).with_name('ran').touch()\n"
    )
    (tmp_path / "team_models" / "mlp.py").write_text("import torch\ndef build():\n    return torch.nn.Linear(4, 2)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    specs = [{"name": "x", "shape": ["batch", 4], "dtype": "float32"}]
    refused = PipelineParams(model_uri="module:team_models.mlp:build", input_specs=specs)
    reliability.bad_inputs += 1
    with pytest.raises(ModelLoadError, match=r"imports and runs module 'team_models\.mlp'.*trust_model_code=true.*"
                       "TRUSTED_CODE_MODULES"):  # fmt: skip
        export_model(refused, tmp_path / "e1")
    assert not (tmp_path / "team_models" / "ran").exists()  # nothing of it was imported
    trusted = export_model(refused.model_copy(update={"trust_model_code": True}), tmp_path / "e2")
    assert "trust_model_code=true" in trusted.model_code
    monkeypatch.setenv("TRUSTED_CODE_MODULES", "tasks.models,team_models")
    assert "TRUSTED_CODE_MODULES" in export_model(refused, tmp_path / "e3").model_code


def test_an_event_sets_how_to_compile_never_what_code_runs(reliability):
    from tasks.stages.compile_pipeline.start import params_from_event

    form = PipelineParams().to_json()
    extra = {"model_name": "m", "model_uri": "s3://bucket/m", "framework": "tensorflow"}
    started = params_from_event(form, {**extra, "compile_params": {"batch_sizes": [1, 8], "dataset": "builtin:digits"}})
    assert started["batch_sizes"] == [1, 8] and started["trust_model_code"] is False
    for smuggled in ({"trust_model_code": True}, {"model_uri": "module:evil:build"}, {"architecture": "resnet50"}):
        reliability.bad_inputs += 1
        with pytest.raises(ValueError, match=rf"compile_params \['{next(iter(smuggled))}'\] cannot come from a"):
            params_from_event(form, {**extra, "compile_params": smuggled})
    with pytest.raises(ValueError, match="trust_model_code"):  # refused at retrain time already, before training
        RetrainParams(compile_params={"trust_model_code": True})


def test_a_safetensors_state_dict_is_a_pytorch_source_read_without_pickle(tmp_path, exported):
    from safetensors.torch import save_file

    from tasks.sources.export import load_reference

    state = torch.load(local_path(exported.formats["pytorch_state_dict"].uri), weights_only=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "mobilenet_v2.safetensors"))
    params = PipelineParams(model_uri=str(tmp_path / "mobilenet_v2.safetensors"), architecture="mobilenet_v2")
    again = export_model(params, tmp_path / "e1")
    inputs = {"input": np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)}
    np.testing.assert_allclose(
        load_reference(again)(inputs)["logits"], load_reference(exported)(inputs)["logits"], atol=1e-5
    )

    (tmp_path / "cut.safetensors").write_bytes((tmp_path / "mobilenet_v2.safetensors").read_bytes()[:4096])
    with pytest.raises(ModelLoadError, match=r"cut.safetensors is not a readable safetensors file"):
        export_model(params.model_copy(update={"model_uri": str(tmp_path / "cut.safetensors")}), tmp_path / "e2")
    save_file({"weight": torch.zeros(3, 4)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ModelLoadError, match=r"weights in .*other.safetensors do not fit architecture 'mobilenet_v2'"):
        export_model(params.model_copy(update={"model_uri": str(tmp_path / "other.safetensors")}), tmp_path / "e3")
