"""Selection strategies over the gate-passing configs measured points."""

from tasks.core.outcomes import ConfigOutcome
from tasks.core.records import CompileConfig, CompiledArtifact
from tasks.core.results import BenchmarkPoint, BenchmarkResult
from tasks.stages.compile_pipeline.gate import select


def _point(batch, streams, throughput, p99, stable=True):
    return BenchmarkPoint(
        batch_size=batch,
        concurrency=streams,
        throughput=throughput,
        latency_ms_p50=p99 / 2,
        latency_ms_p90=p99,
        latency_ms_p99=p99,
        iterations=10,
        stable=stable,
    )


def test_selection_strategies_pick_a_measured_point_of_a_passing_config():
    def outcome(target, points, gate="pass"):
        config = CompileConfig(target=target, precision="fp32")
        return ConfigOutcome(
            compiled=CompiledArtifact(config=config, status="ok"),
            benchmark=BenchmarkResult(subject=config.key, status="ok", points=points),
            gate=gate,
        )

    ort = outcome("onnxruntime", [_point(1, 1, 150, 8), _point(16, 1, 400, 60), _point(16, 2, 420, 110)])
    ov = outcome("openvino", [_point(1, 1, 240, 5), _point(8, 1, 380, 30), _point(8, 4, 900, 15, stable=False)])
    failed = outcome("inductor", [_point(1, 1, 5000, 1)], gate="fail")
    outcomes = [ort, ov, failed]
    assert select(outcomes, "max_throughput") == (ort, ort.benchmark.points[2])  # the unstable 900 is not taken
    assert select(outcomes, "min_latency") == (ov, ov.benchmark.points[0])
    assert select(outcomes, "max_throughput_under_latency", 40) == (ov, ov.benchmark.points[1])
    assert select(outcomes, "max_throughput_under_latency", 2) is None
