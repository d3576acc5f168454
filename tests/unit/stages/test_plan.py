"""The plan task: targets x precisions, unknown ones refused, unavailable ones skipped with the reason."""

import pytest
from pydantic import ValidationError

from tasks.core.cpu import has_native_bf16
from tasks.core.params import PipelineParams
from tasks.stages.compile_pipeline.plan import plan_configs

BF16 = has_native_bf16()


def test_plan_crosses_targets_with_the_precisions_each_supports():
    configs, skipped = plan_configs(PipelineParams())
    bf16 = ["openvino-bf16", "inductor-bf16"]
    expected = ["onnxruntime-fp32", "onnxruntime-int8", "openvino-fp32", "openvino-bf16", "openvino-int8",
                "inductor-fp32", "inductor-bf16"]  # fmt: skip
    assert [c.key for c in configs] == [k for k in expected if BF16 or k not in bf16]
    if not BF16:  # emulated bf16 measures nothing worth having: skipped, naming the CPU's missing instructions
        assert "OpenVINO lists" in skipped["openvino-bf16"] and "no bf16 support" in skipped["openvino-bf16"]
        assert skipped["inductor-bf16"].startswith("this CPU has no bf16 instructions")
    # no Neuron SDK and no GPU here: skipped, each with its reason
    assert "tensorflow-neuron is not installed" in skipped["neuron-inf1"]
    assert "torch-neuronx is not installed" in skipped["neuron-inf2"]
    assert "tensorrt" in skipped["tensorrt"]


def test_plan_names_a_target_that_supports_none_of_the_precisions():
    params = PipelineParams(targets=["onnxruntime", "openvino"], precisions=["bf16"])
    if not BF16:  # nothing left to compile: the error names every reason
        with pytest.raises(ValueError, match=r"no compile config can run here: onnxruntime: supports none of "
                           r"\['bf16'\] \(only fp32, int8\); openvino-bf16: this CPU has no bf16 support"):  # fmt: skip
            plan_configs(params)
        return
    configs, skipped = plan_configs(params)
    assert [c.key for c in configs] == ["openvino-bf16"]
    assert "supports none of ['bf16']" in skipped["onnxruntime"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"targets": ["tensorrtx"]}, "unknown target"),
        ({"precisions": ["fp8"]}, "unknown precision"),
    ],
)
def test_plan_refuses_unknown_targets_and_precisions(params, message):
    with pytest.raises(ValueError, match=message):
        plan_configs(PipelineParams(**params))


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"batch_sizes": [0, 4]}, "batch sizes must be between 1 and 1024"),
        ({"top5_tolerance_pp": -1}, "greater than or equal to 0"),
        ({"model_name": "../etc"}, "model_name '../etc' must be"),
        ({"model_name": "a/b"}, "model_name 'a/b' must be"),
        ({"targets": []}, "at least 1 item"),
    ],
)
def test_bad_params_are_refused_with_the_reason(params, message):
    with pytest.raises(ValidationError, match=message):
        PipelineParams(**params)


def test_on_a_cpu_without_bf16_the_plan_skips_bf16_configs_and_says_why(monkeypatch):
    from tasks.core import cpu

    monkeypatch.setattr(cpu, "flags", lambda: frozenset({"avx2", "fma"}))  # an AVX2 EPYC, wherever this runs
    monkeypatch.setattr(cpu.platform, "machine", lambda: "x86_64")
    configs, skipped = plan_configs(PipelineParams(targets=["inductor"]))
    assert [c.key for c in configs] == ["inductor-fp32"]
    assert skipped == {"inductor-bf16": "this CPU has no bf16 instructions (AVX512-BF16 or AMX)"}
