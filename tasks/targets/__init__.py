"""Compile targets: one module each, found by name in :data:`TARGET_MODULES` (the registry).

A target module defines ``TARGET``, an object with the whole :class:`tasks.targets.base.Target`
interface (its module imports it; this one imports nothing of the project, so the records can name
the registered targets as their default). A target whose runtime or SDK is missing answers ``available() == (False, reason)``
and is skipped with that reason; nothing is faked.
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> module that defines TARGET (the registry: one line per target, in the order a run compiles them by
# default); modules are imported only when used, so
# listing targets never imports a heavy runtime.
TARGET_MODULES = {
    "onnxruntime": "tasks.targets.onnxruntime_cpu",
    "openvino": "tasks.targets.openvino_cpu",
    "inductor": "tasks.targets.inductor_cpu",
    "neuron-inf1": "tasks.targets.neuron.inf1",
    "neuron-inf2": "tasks.targets.neuron.inf2",
    "tensorrt": "tasks.targets.tensorrt_gpu",
}


def names() -> list[str]:
    return sorted(TARGET_MODULES)


def get(name: str) -> Any:
    """The ``TARGET`` of ``name``'s module: a :class:`tasks.targets.base.Target`."""
    try:
        module = TARGET_MODULES[name]
    except KeyError:
        raise ValueError(f"unknown target {name!r}; known targets: {', '.join(names())}") from None
    return importlib.import_module(module).TARGET


def availability() -> dict[str, tuple[bool, str]]:
    return {name: get(name).available() for name in names()}
