"""How a DAG task runs a stage: JSON from XCom in, typed records to the stage function, its result returned as
JSON; a failure said as a ``<stage> FAILED: <reason>`` progress line, an unreachable MLflow or S3 named as such.

A stage is a plain function on records, decorated with :func:`stage`; its name is the DAG task's. A stage of a
compile run (its first argument ``ctx: RunContext``) also puts its result (or its error) in the run store under
``<run>/stages/<task>[-<config>].json``, so the run report can say what each stage produced and which one failed,
and why, whether or not later stages ran. promote_model's stages have no run store: their records travel by XCom
only, and Airflow's log keeps their errors.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import itertools
import time
import traceback
import typing
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

from pydantic import TypeAdapter

from tasks.core import settings as settings_module
from tasks.core import store
from tasks.core.faults import named_unreachable
from tasks.core.files import OtherHostError
from tasks.core.records import RunContext, safe_run_id
from tasks.core.store import STAGES_DIR

PROGRESS_MARK = "[pipeline]"
# Retry policies the DAGs give their tasks. Stages that talk to MLflow or S3 retry the whole stage after the
# clients' own backoff; compile, validate and benchmark failures come back as failed configs, not as task
# failures, so a task that fails there lost its worker (killed, machine gone, no heartbeat).
NETWORK_RETRIES = {"retries": 3, "retry_delay": timedelta(seconds=5), "retry_exponential_backoff": True}
WORKER_LOSS_RETRIES = {"retries": 2, "retry_delay": timedelta(seconds=10)}


def run_uri_for(run_id: str) -> str:
    """The run's prefix in the run store (``RUN_STORE_URI``), a ``file://`` one naming this host."""
    return store.host_uri(store.join(settings_module.load().run_store_uri, safe_run_id(run_id)))


def stage_file(run_uri: str, stage: str, key: str = "") -> str:
    """``<run>/stages/<stage>[-<key>]``, without a suffix (``.json`` result, ``.error.json`` failure)."""
    return store.join(run_uri, STAGES_DIR, f"{stage}-{key}" if key else stage)


def progress(stage: str, message: str) -> None:
    """One line per finished step; the demo shows these lines out of Airflow's log."""
    print(f"{PROGRESS_MARK} {stage:<15} {message}", flush=True)


def points_said(stage: str, subject: str) -> Callable[[Any], None]:
    """A sweep's progress, each benchmark point as it is measured: a sweep takes minutes, and says how far along."""
    counted = itertools.count(1)
    return lambda point: progress(stage, f"{subject}: point {next(counted)}, {point.summary}")


@contextlib.contextmanager
def failure_said(stage: str, key: str = "") -> Iterator[None]:
    """A stage's failure said as a progress line too, so that the console of ``make demo`` and ``make dag-test``
    names the stage and its reason (not only Airflow's log); then raised on."""
    try:
        yield
    except Exception as exc:
        progress(stage, f"{key + ': ' if key else ''}FAILED: {type(exc).__name__}: {str(exc)[:1000]}")
        raise


def says_failure(stage: str) -> Callable:
    """:func:`failure_said` around a stage function that takes and returns plain dicts (retrain_to_deploy's)."""

    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def run(*args, **kwargs):
            with failure_said(stage):
                return fn(*args, **kwargs)

        return run

    return decorate


@contextlib.contextmanager
def said(stage: str, key: str = "") -> Iterator[None]:
    """A stage's failure said as a progress line (:func:`failure_said`), an unreachable MLflow or S3 named as such
    (:func:`tasks.core.faults.named_unreachable`)."""
    with failure_said(stage, key), named_unreachable(settings_module.load()):
        yield


@contextlib.contextmanager
def recorded(run_uri: str, stage: str, key: str = "") -> Iterator[None]:
    """Save a stage's exception (type, message, traceback, when) in the run store before it propagates.

    A run store on another host's disk is named before anything runs (the stage could not hand on its result).
    """
    base = stage_file(run_uri, stage, key)
    store.delete(f"{base}.error.json")
    try:
        with said(stage, key):
            yield
    except OtherHostError:
        raise  # nothing of the run can be written from here either: the task's log holds the reason
    except Exception as exc:
        store.put_json(
            f"{base}.error.json",
            {"stage": stage, "key": key, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(),
             "at": time.time(), "host": settings_module.this_host()},
        )  # fmt: skip
        raise


def stage(name: str, key: Callable[..., str] | None = None):
    """Make ``fn(...) -> Record`` callable with JSON: each argument is validated into the type its annotation names,
    the result is returned as JSON, and a failure is said (:func:`said`).

    A stage with ``ctx: RunContext`` (compile_pipeline's) also saves its result, or its error, under the run
    directory; ``key`` names the mapped instance (a config) from the typed arguments: ``<name>-<key>.json``.
    A stage without one (promote_model's) has no run store; a bad argument is said as its failure too.
    """

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(fn)
        hints = typing.get_type_hints(fn)
        adapters = {param: TypeAdapter(hints[param]) for param in signature.parameters}
        result_adapter = TypeAdapter(hints["return"])
        in_run = hints.get("ctx") is RunContext

        def typed_arguments(*args: Any, **kwargs: Any) -> dict[str, Any]:
            bound = signature.bind(*args, **kwargs)
            return {param: adapters[param].validate_python(value) for param, value in bound.arguments.items()}

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            if not in_run:
                with said(name):
                    return result_adapter.dump_python(fn(**typed_arguments(*args, **kwargs)), mode="json")
            typed = typed_arguments(*args, **kwargs)
            ctx: RunContext = typed["ctx"]
            instance = key(**typed) if key else ""
            with recorded(ctx.run_uri, name, instance):
                result = fn(**typed)
            data = result_adapter.dump_python(result, mode="json")
            store.put_json(f"{stage_file(ctx.run_uri, name, instance)}.json", data)
            return data

        return run

    return wrap
