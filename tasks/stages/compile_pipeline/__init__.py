"""The ``compile_pipeline`` DAG's tasks, one module each, named as the task is; the DAG calls ``<task>.run``.

start → export → prepare_dataset → plan → compile_config (one per config) → baseline → validate →
benchmark → gate → record → register → finalize (the run report, whatever happened).
"""

from tasks.stages.compile_pipeline import (
    baseline,
    benchmark,
    compile_config,
    export,
    finalize,
    gate,
    plan,
    prepare_dataset,
    record,
    register,
    start,
    validate,
)

__all__ = [
    "baseline",
    "benchmark",
    "compile_config",
    "export",
    "finalize",
    "gate",
    "plan",
    "prepare_dataset",
    "record",
    "register",
    "start",
    "validate",
]
