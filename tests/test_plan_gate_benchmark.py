import time

import numpy as np
import pytest
from pydantic import ValidationError

from tasks.benchmark import measure
from tasks.gate import select
from tasks.plan import plan_configs
from tasks.records import (
    BenchmarkPoint,
    BenchmarkResult,
    CompileConfig,
    CompiledArtifact,
    ConfigOutcome,
    PipelineParams,
)


def test_plan_crosses_targets_with_the_precisions_each_supports():
    configs, skipped = plan_configs(PipelineParams())
    assert [c.key for c in configs] == [
        "onnxruntime-fp32",
        "onnxruntime-int8",
        "openvino-fp32",
        "openvino-bf16",
        "inductor-fp32",
        "inductor-bf16",
    ]
    # no Neuron SDK and no GPU here: skipped, each with its reason
    assert "tensorflow-neuron is not installed" in skipped["neuron-inf1"]
    assert "torch-neuronx is not installed" in skipped["neuron-inf2"]
    assert "tensorrt" in skipped["tensorrt"]


def test_plan_names_a_target_that_supports_none_of_the_precisions():
    configs, skipped = plan_configs(PipelineParams(targets=["onnxruntime", "openvino"], precisions=["bf16"]))
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


def _outcome(key_target, throughput, gate="pass"):
    config = CompileConfig(target=key_target, precision="fp32")
    point = BenchmarkPoint(
        batch_size=4, throughput=throughput, latency_ms_p50=1, latency_ms_p90=1, latency_ms_p99=2, iterations=10
    )
    return ConfigOutcome(
        compiled=CompiledArtifact(config=config, status="ok"),
        benchmark=BenchmarkResult(subject=config.key, status="ok", points=[point]),
        gate=gate,
    )


def test_select_takes_the_fastest_passing_config():
    slow, fast_failing, fast = (
        _outcome("onnxruntime", 100),
        _outcome("openvino", 900, gate="fail"),
        _outcome("openvino", 300),
    )
    assert select([slow, fast_failing, fast]) is fast
    assert select([fast_failing]) is None


def test_measure_reports_throughput_and_latency_percentiles():
    def predict(batch):
        time.sleep(0.01)
        return batch

    point = measure(predict, {"x": np.zeros(4)}, 4, measure_s=0.3)
    assert point.iterations >= 10
    assert 8 <= point.latency_ms_p50 <= 30
    assert point.latency_ms_p50 <= point.latency_ms_p90 <= point.latency_ms_p99
    assert 4 / 0.03 < point.throughput < 4 / 0.009
