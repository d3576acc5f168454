"""Task ``benchmark`` (mapped, on the config's host class): throughput and latency of a compiled config, one sweep
at a time per host (tasks.benchmark.host_lock)."""

from __future__ import annotations

from tasks.benchmark import host_lock
from tasks.benchmark.harness import benchmark_artifact, harness_for, machine_context
from tasks.core.records import CompiledArtifact, DatasetRef, RunContext
from tasks.core.results import BenchmarkResult
from tasks.stages.runner import points_said, progress, stage


@stage("benchmark", key=lambda artifact, **_: artifact.config.key)
def run(ctx: RunContext, artifact: CompiledArtifact, dataset: DatasetRef) -> BenchmarkResult:
    with host_lock.sweep() as waited:
        # the peak (measured once per host) is measured holding the sweep lock: no sweep of ours shares the cores
        machine = machine_context()
        result = benchmark_artifact(
            artifact,
            dataset,
            ctx.params.batch_sizes,
            harness_for(ctx.params),
            on_point=points_said("benchmark", artifact.config.key),
        )
    result = result.model_copy(update={"machine": machine, "waited_s": round(waited, 1)})
    best = result.best
    progress(
        "benchmark",
        f"{artifact.config.key} on {result.machine.host}: "
        + (f"best {best.summary}" if best else f"{result.status}, {result.reason}"),
    )
    return result
