"""Task ``baseline``: the source framework itself on CPU, the reference every compiled config is judged against."""

from __future__ import annotations

from pathlib import Path

from tasks.benchmark.harness import benchmark_baseline, harness_for, machine_context
from tasks.core.records import BaselineResult, DatasetRef, ExportedModel, RunContext
from tasks.stages.runner import fmt, progress, stage
from tasks.validation.predictions import baseline_predictions


@stage("baseline")
def run(ctx: RunContext, exported: ExportedModel, dataset: DatasetRef) -> BaselineResult:
    predictions = baseline_predictions(exported, dataset, Path(ctx.run_dir) / "outputs")
    benchmark = benchmark_baseline(exported, dataset, ctx.params.batch_sizes, harness_for(ctx.params))
    result = BaselineResult(
        framework=exported.framework,
        predictions=predictions,
        benchmark=benchmark.model_copy(update={"machine": machine_context()}),
    )
    progress(
        "baseline",
        f"{exported.framework} on CPU: top-1 {fmt(result.predictions.top1)}, top-5 {fmt(result.predictions.top5)}, "
        f"best {result.benchmark.best.summary}",
    )
    return result
