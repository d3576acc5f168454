"""Task ``prepare_dataset``: the validation samples (and int8 calibration inputs) bound to the model's inputs."""

from __future__ import annotations

from pathlib import Path

from tasks.core.records import DatasetRef, ExportedModel, RunContext
from tasks.datasets.prepare import prepare
from tasks.stages.runner import progress, stage


@stage("prepare_dataset")
def run(ctx: RunContext, exported: ExportedModel) -> DatasetRef:
    ref = prepare(ctx.params.dataset, Path(ctx.run_dir) / "dataset", exported, ctx.params.calibration_samples)
    progress(
        "prepare_dataset",
        f"{ref.name}: {ref.samples} {'labelled ' if ref.labelled else ''}samples for inputs {', '.join(ref.inputs)}"
        + (f"; {ref.calibration_samples} calibration samples" if ref.calibration_samples else ""),
    )
    return ref
