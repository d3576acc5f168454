"""Task ``finalize`` (runs whatever happened before it): the run report, from the stages' saved results."""

from __future__ import annotations

from tasks.core import settings as settings_module
from tasks.report.run_report import write
from tasks.stages.runner import run_dir_for


def run(run_id: str) -> str:
    """Write the run report; raise if the pipeline failed, naming the stage and its error."""
    path, failure = write(run_dir_for(run_id), run_id, settings_module.load())
    if failure:
        raise RuntimeError(f"pipeline failed at stage {failure['stage']}: {failure['error']} (report: {path})")
    return str(path)
