"""Task ``prepare_dataset``: the validation samples (and int8 calibration inputs) bound to the model's inputs."""

from __future__ import annotations

import shutil

from tasks.core import store
from tasks.core.records import DatasetRef, ExportedModel, FileRef, RunContext
from tasks.datasets.prepare import prepare
from tasks.stages.runner import progress, stage


@stage("prepare_dataset")
def run(ctx: RunContext, exported: ExportedModel) -> DatasetRef:
    scratch = ctx.scratch("dataset")
    ref = prepare(ctx.params.dataset, scratch, exported, ctx.params.calibration_samples)
    # Handed on through the run store: compiles (calibration) and the run hosts (validation) read it from there.
    published = store.publish(ref.ref, store.join(ctx.run_uri, "dataset", store.name_of(ref.uri)))
    update = {"uri": published.uri}
    if ref.calibration_ref:
        calibration = FileRef(uri=ref.calibration_uri, sha256=ref.calibration_sha256)
        update["calibration_uri"] = store.publish(
            calibration, store.join(ctx.run_uri, "dataset", store.name_of(ref.calibration_uri))
        ).uri
    ref = ref.model_copy(update=update)
    shutil.rmtree(scratch, ignore_errors=True)
    progress(
        "prepare_dataset",
        f"{ref.name}: {ref.samples} {'labelled ' if ref.labelled else ''}samples for inputs {', '.join(ref.inputs)}"
        + (f"; {ref.calibration_samples} calibration samples" if ref.calibration_samples else ""),
    )
    return ref
