"""Task ``benchmark`` (mapped, one at a time per host): throughput and latency of a compiled config."""

from __future__ import annotations

from tasks.benchmark.harness import benchmark_artifact, harness_for, machine_context
from tasks.core.records import BenchmarkResult, CompiledArtifact, DatasetRef, RunContext
from tasks.stages.runner import progress, stage


@stage("benchmark", key=lambda artifact, **_: artifact.config.key)
def run(ctx: RunContext, artifact: CompiledArtifact, dataset: DatasetRef) -> BenchmarkResult:
    result = benchmark_artifact(artifact, dataset, ctx.params.batch_sizes, harness_for(ctx.params))
    result = result.model_copy(update={"machine": machine_context()})
    best = result.best
    progress(
        "benchmark",
        f"{artifact.config.key}: " + (f"best {best.summary}" if best else f"{result.status}, {result.reason}"),
    )
    return result
