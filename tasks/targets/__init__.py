"""Compile targets: one module each, behind one small interface, found by name in :data:`TARGETS`.

A target whose runtime or SDK is missing answers ``available() == (False, reason)``
and is skipped with that reason; nothing is faked.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

from tasks.records import CompileConfig, CompiledArtifact, ExportedModel

Predict = Callable[[np.ndarray], np.ndarray]


class CompileError(RuntimeError):
    """A config could not be compiled; the message names the cause (e.g. an unsupported operator)."""


class Target(Protocol):
    name: str
    precisions: tuple[str, ...]  # precisions this target can compile to
    fixed_batch: bool  # True: one artifact per batch size (like Neuron); False: any batch size

    def available(self) -> tuple[bool, str]:
        """Whether this target can compile here, and why not."""

    def compile(
        self, exported: ExportedModel, config: CompileConfig, out_dir: Path, calibration: np.ndarray
    ) -> tuple[str, str]:
        """Write the compiled model into ``out_dir``; return (compiler name, compiler version).

        ``calibration`` is preprocessed input for precisions that need it (int8); it is
        never the validation data.
        """

    def load(self, artifact: CompiledArtifact, batch_size: int) -> Predict:
        """A function that runs one preprocessed NCHW batch of ``batch_size`` and returns logits."""


# name -> module that defines TARGET; modules are imported only when used, so
# listing targets never imports a heavy runtime.
TARGET_MODULES = {
    "onnxruntime": "tasks.targets.onnxruntime_cpu",
    "openvino": "tasks.targets.openvino_cpu",
}


def names() -> list[str]:
    return sorted(TARGET_MODULES)


def get(name: str) -> Target:
    try:
        module = TARGET_MODULES[name]
    except KeyError:
        raise ValueError(f"unknown target {name!r}; known targets: {', '.join(names())}") from None
    return importlib.import_module(module).TARGET


def _module_version(module: str) -> str:
    return importlib.import_module(module).__version__


def availability() -> dict[str, tuple[bool, str]]:
    return {name: get(name).available() for name in names()}
