"""Task ``export``: load the trained model safely and write the formats the compile targets start from."""

from __future__ import annotations

from pathlib import Path

from tasks.core.records import ExportedModel, RunContext
from tasks.sources.export import export_model
from tasks.stages.runner import progress, stage


@stage("export")
def run(ctx: RunContext) -> ExportedModel:
    exported = export_model(ctx.params, Path(ctx.run_dir) / "export")
    progress(
        "export",
        f"{exported.name}: {exported.parameters:,} parameters, sha256 {exported.source_sha256[:12]}, "
        f"formats {', '.join(exported.formats)}",
    )
    return exported
