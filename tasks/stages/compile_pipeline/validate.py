"""Task ``validate`` (mapped, on the config's host class): a compiled config against the CPU baseline measured on
the same host class, on exactly the same samples."""

from __future__ import annotations

from tasks import targets
from tasks.benchmark import host_lock
from tasks.core import settings as settings_module
from tasks.core import store
from tasks.core.figures import ValidationResult, fmt, headline
from tasks.core.records import CompiledArtifact, DatasetRef, RunContext, Status
from tasks.core.results import BaselineResult
from tasks.stages.runner import progress, stage
from tasks.validation.predictions import publish_outputs, validate_artifact


@stage("validate", key=lambda artifact, **_: artifact.config.key)
def run(ctx: RunContext, artifact: CompiledArtifact, dataset: DatasetRef, baseline: BaselineResult) -> ValidationResult:
    """Against ``baseline``, the one measured on this config's host class."""
    key = artifact.config.key
    host_class = targets.get(artifact.config.target).run_queue
    if baseline.host_class != host_class:
        raise ValueError(f"{key} runs on host class {host_class}, and was given the baseline of {baseline.host_class}")
    with host_lock.beside_others():
        result = validate_artifact(
            artifact, dataset, baseline, ctx.scratch("outputs"), atol=ctx.params.atol, rtol=ctx.params.rtol
        )
    result = result.model_copy(update={"host": settings_module.this_host()})
    where = store.join(ctx.run_uri, "outputs", f"{key}.outputs.npz")
    result = result.model_copy(update={"predictions": publish_outputs(result.predictions, where)})
    if result.status == Status.OK and result.nonfinite_values:
        progress("validate", f"{key}: {result.nonfinite_values} NaN or Inf output values")
    elif result.status == Status.OK:
        figures = []
        for check in result.outputs:
            name = f"{check.name}: " if len(result.outputs) > 1 else ""
            accuracy = f"top-5 {fmt(result.predictions.top5)}, " if check.labelled else ""
            figures.append(f"{name}{accuracy}{headline(check)}")
        progress("validate", f"{key}: " + "; ".join(figures))
    else:
        progress("validate", f"{key}: {result.status}, {result.reason}")
    return result
