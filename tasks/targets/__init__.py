"""Compile targets: one module each, found by name in :data:`TARGET_MODULES` (the registry, in
:mod:`tasks.targets.registry`).

A target module defines ``TARGET``, an object with the whole :class:`tasks.targets.base.Target` interface. A target
whose runtime or SDK is missing answers ``available() == (False, reason)`` and is skipped with that reason; nothing
is faked.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from tasks.targets.registry import TARGET_MODULES

if TYPE_CHECKING:  # the interface, for type checkers only: the records import the registry
    from tasks.targets.base import Target


def names() -> list[str]:
    return sorted(TARGET_MODULES)


def get(name: str) -> Target:
    """The ``TARGET`` of ``name``'s module: a :class:`tasks.targets.base.Target`."""
    try:
        module = TARGET_MODULES[name]
    except KeyError:
        raise ValueError(f"unknown target {name!r}; known targets: {', '.join(names())}") from None
    return importlib.import_module(module).TARGET


def availability() -> dict[str, tuple[bool, str]]:
    return {name: get(name).available() for name in names()}


# The queue the plan runs on: it judges there whether each target compiled on that queue can compile.
PLAN_QUEUE = "compile"


def host_classes() -> dict[str, str]:
    """Every host class (a target's run queue), in the registry's order, with the queue its targets compile on.

    A host class has one compile queue, so that a config's compile, and its validation and benchmark beside the
    class's own CPU baseline, are one chain of tasks per class in the DAG.
    """
    classes: dict[str, str] = {}
    for name in TARGET_MODULES:
        target = get(name)
        compiles_on = classes.setdefault(target.run_queue, target.compile_queue)
        if compiles_on != target.compile_queue:
            raise ValueError(
                f"target {name} runs on host class {target.run_queue!r} and compiles on {target.compile_queue!r}, "
                f"another target of that class on {compiles_on!r}: one compile queue per host class"
            )
    return classes
