"""Task ``finalize`` (runs whatever happened before it): the run report, from the stages' saved results."""

from __future__ import annotations

import tempfile
from pathlib import Path

from tasks.core import settings as settings_module
from tasks.core.records import safe_run_id
from tasks.report.publish import write
from tasks.stages.runner import run_uri_for


def run(run_id: str) -> str:
    """Write the run report; raise if the pipeline failed, naming the stage and its error."""
    settings = settings_module.load()
    with tempfile.TemporaryDirectory(prefix=f"report-{safe_run_id(run_id)}-", dir=settings.home) as scratch:
        path, failure = write(run_uri_for(run_id), run_id, settings, Path(scratch))
    if failure:
        raise RuntimeError(f"pipeline failed at stage {failure['stage']}: {failure['error']} (report: {path})")
    return str(path)
