"""Task ``start``: check the params (the trigger form's, or a retrain event's) and name the run's prefix in the run store."""

from __future__ import annotations

import time
from typing import Any

from tasks import sources, targets
from tasks.core.param_schema import field_schemas
from tasks.core.params import PipelineParams, check_event_params
from tasks.core.records import RunContext
from tasks.core.store import put_json
from tasks.models import ARCHITECTURES
from tasks.stages.compile_pipeline.plan import KNOWN_PRECISIONS, check_params
from tasks.stages.runner import progress, run_uri_for, stage_file

NAME = "start"


def param_schemas() -> dict[str, dict[str, Any]]:
    """The DAG's params: :class:`PipelineParams`' schema, with the registries' names as the choices."""
    return field_schemas(
        PipelineParams,
        {
            "targets": {"items": {"enum": targets.names()}},
            "precisions": {"items": {"enum": list(KNOWN_PRECISIONS)}},
            "architecture": {"enum": sorted(ARCHITECTURES)},
            "framework": {"enum": sources.names()},
        },
    )


def params_from_event(params: dict, extra: dict) -> dict:
    """compile_pipeline's params for a run started by a model_exported event: the event's model over the form's, and
    of its compile params only those an event may set (a refusal names the others); trust stays the form's."""
    return {
        **params,
        **check_event_params(extra.get("compile_params") or {}),
        "model_name": extra["model_name"],
        "model_uri": extra["model_uri"],
        "framework": extra["framework"],
    }


def run(params: dict, run_id: str) -> dict:
    """The run's context as JSON; bad params fail here, before any work, with the params kept for the report."""
    run_uri = run_uri_for(run_id)
    base = stage_file(run_uri, NAME)
    try:
        parsed = PipelineParams.model_validate(params)
        check_params(parsed)
    except Exception as exc:
        put_json(f"{base}.error.json", {"stage": NAME, "error": f"{type(exc).__name__}: {exc}", "at": time.time()})
        put_json(f"{base}.params.json", params)
        raise
    ctx = RunContext(run_id=run_id, run_uri=run_uri, params=parsed)
    progress(
        NAME,
        f"run {run_id}: model {parsed.model_name}, targets {parsed.targets}, precisions {parsed.precisions}; "
        f"run store {run_uri}",
    )
    put_json(f"{base}.json", ctx.to_json())
    return ctx.to_json()
