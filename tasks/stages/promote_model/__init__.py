"""The ``promote_model`` DAG's tasks, one module each: find → promote → smoke_test → serve (mapped per request).

Triggered by hand with a model and a version or alias (``champion`` by default), or on a schedule
with no model: then every champion that is promotable and not promoted yet. ``rollback_to`` points
serving back to an earlier committed version instead. A refused version (rejected in review, or
gate-failed) stops the run with the reason; nothing is written for it. Requests travel as JSON.
"""

from tasks.stages.promote_model import find, promote, serve, smoke_test

__all__ = ["find", "promote", "serve", "smoke_test", "request_name"]


def request_name(request: dict) -> str:
    if "rollback_to" in request:
        return f"{request['model']}-rollback-{request['rollback_to']}"
    return f"{request['model']}-v{request['registry_version']}"
