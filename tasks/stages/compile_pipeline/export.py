"""Task ``export``: load the trained model safely and write the formats the compile targets start from."""

from __future__ import annotations

import shutil

from tasks.core import store
from tasks.core.records import ExportedModel, RunContext
from tasks.sources.export import export_model
from tasks.stages.runner import progress, stage


@stage("export")
def run(ctx: RunContext) -> ExportedModel:
    scratch = ctx.scratch("export")
    exported = export_model(ctx.params, scratch)
    # Handed on through the run store: the compile fleet and the run hosts read them from there.
    formats = {
        name: store.publish(ref, store.join(ctx.run_uri, "export", store.name_of(ref.uri)))
        for name, ref in exported.formats.items()
    }
    shutil.rmtree(scratch, ignore_errors=True)
    exported = exported.model_copy(update={"formats": formats})
    progress(
        "export",
        f"{exported.name}: {exported.parameters:,} parameters, sha256 {exported.source_sha256[:12]}, "
        f"formats {', '.join(exported.formats)}",
    )
    return exported
