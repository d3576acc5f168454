"""Task ``validate`` (mapped): a compiled config against the CPU baseline, on exactly the same samples."""

from __future__ import annotations

from pathlib import Path

from tasks.core.records import BaselineResult, CompiledArtifact, DatasetRef, RunContext, Status, ValidationResult
from tasks.stages.runner import fmt, progress, stage
from tasks.validation.predictions import validate_artifact


@stage("validate", key=lambda artifact, **_: artifact.config.key)
def run(ctx: RunContext, artifact: CompiledArtifact, dataset: DatasetRef, baseline: BaselineResult) -> ValidationResult:
    result = validate_artifact(
        artifact, dataset, baseline, Path(ctx.run_dir) / "outputs", atol=ctx.params.atol, rtol=ctx.params.rtol
    )
    key = artifact.config.key
    if result.status == Status.OK and result.nonfinite_outputs:
        progress("validate", f"{key}: {result.nonfinite_outputs} NaN or Inf output values")
    elif result.status == Status.OK:
        figures = []
        for check in result.outputs:
            name = f"{check.name}: " if len(result.outputs) > 1 else ""
            if check.class_scores:
                figures.append(
                    f"{name}top-5 {fmt(result.predictions.top5)} ({fmt(check.top5_delta, '+.2f')} pp), "
                    f"top-1 agreement {fmt(check.top1_agreement)}, top-1 probability shift "
                    f"{fmt(check.top1_probability_shift)}, top-5 set agreement {fmt(check.top5_agreement)}"
                )
            else:
                neighbours = (
                    "" if check.neighbour_agreement is None else f", neighbours {check.neighbour_agreement:.3f}"
                )
                figures.append(f"{name}lowest cosine {fmt(check.cosine_min, '.5f')}{neighbours}")
        progress("validate", f"{key}: " + "; ".join(figures))
    else:
        progress("validate", f"{key}: {result.status}, {result.reason}")
    return result
