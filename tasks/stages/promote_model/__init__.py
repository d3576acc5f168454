"""The ``promote_model`` DAG's tasks, one module each: find → promote → smoke_test → serve (mapped per request; the
smoke test on the host class of the version's target, so one chain per host class after promote).

Triggered by hand with a model and a version or alias (``champion`` by default), or on a schedule
with no model: then every champion (alias in ``<model>.approved``, tasks.registry.review) that is
promotable and not promoted yet. ``rollback_to`` points
serving back to an earlier committed version instead. A refused version (rejected in review, or
gate-failed) stops the run with the reason; nothing is written for it. Requests travel as JSON: the records of
tasks.serving.records, each stage's the one before with what it added.
"""

from tasks.serving.records import PromoteRequest
from tasks.stages.promote_model import find, promote, serve, smoke_test

__all__ = ["find", "promote", "serve", "smoke_test", "request_name", "for_host_class"]


def request_name(record: dict) -> str:
    """The mapped task instance's name, from the JSON of a request or of any record after it."""
    return PromoteRequest.of(record).name


def for_host_class(records: list[dict], host_class: str) -> list[dict]:
    """The records (JSON) whose smoke test runs on ``host_class``."""
    return [r for r in records if PromoteRequest.of(r).host_class == host_class]
