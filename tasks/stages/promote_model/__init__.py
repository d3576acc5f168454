"""The ``promote_model`` DAG's tasks, one module each: find → promote → smoke_test → serve (mapped per request; the
smoke test on the host class of the version's target, so one chain per host class after promote).

Triggered by hand with a model and a version or alias (``champion`` by default), or on a schedule
with no model: then every champion (alias in ``<model>.approved``, tasks.serving.review) that is
promotable and not promoted yet. ``rollback_to`` points
serving back to an earlier committed version instead. A refused version (rejected in review, or
gate-failed) stops the run with the reason; nothing is written for it. Requests travel as JSON.
"""

from tasks.stages.promote_model import find, promote, serve, smoke_test

__all__ = ["find", "promote", "serve", "smoke_test", "request_name", "for_host_class"]


def request_name(request: dict) -> str:
    if "rollback_to" in request:
        return f"{request['model']}-rollback-{request['rollback_to']}"
    return f"{request['model']}-v{request['registry_version']}"


def for_host_class(requests: list[dict], host_class: str) -> list[dict]:
    """The requests whose smoke test runs on ``host_class`` (a request without one predates host classes: cpu)."""
    return [r for r in requests if r.get("host_class", "cpu") == host_class]
