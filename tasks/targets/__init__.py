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

from tasks.records import CompileConfig, CompiledArtifact, CompileReport, ExportedModel, Fingerprint

# One batch of inputs, keyed by input name -> the model's first output (logits or embeddings).
Predict = Callable[[dict[str, np.ndarray]], np.ndarray]


class CompileError(RuntimeError):
    """A config could not be compiled; the message names the cause (e.g. an unsupported operator)."""


class Target(Protocol):
    name: str
    precisions: tuple[str, ...]  # precisions this target can compile to
    fixed_batch: bool  # True: one artifact per batch size (like Neuron); False: any batch size

    def available(self) -> tuple[bool, str]:
        """Whether this target can compile here, and why not."""

    def accepts(self, exported: ExportedModel) -> str:
        """Why this target cannot compile ``exported`` (e.g. a source format it does not read), or ""."""

    def fingerprint(self, exported: ExportedModel, config: CompileConfig) -> Fingerprint:
        """Compiler, version, flags and source format of ``config``, cheaply, without compiling."""

    def compile(
        self,
        exported: ExportedModel,
        config: CompileConfig,
        out_dir: Path,
        calibration: dict[str, np.ndarray] | None,
    ) -> CompileReport:
        """Write the compiled model into ``out_dir`` and say what the compiler did.

        ``calibration`` holds preprocessed inputs by name for precisions that need it (int8);
        it is never the validation data.
        """

    def load(self, artifact: CompiledArtifact, batch_size: int) -> Predict:
        """A function that runs one batch of ``batch_size`` samples and returns the first output."""


# name -> module that defines TARGET; modules are imported only when used, so
# listing targets never imports a heavy runtime.
TARGET_MODULES = {
    "onnxruntime": "tasks.targets.onnxruntime_cpu",
    "openvino": "tasks.targets.openvino_cpu",
    "inductor": "tasks.targets.inductor_cpu",
    "tensorrt": "tasks.targets.tensorrt_gpu",
    "neuron-inf1": "tasks.targets.neuron_inf1",
    "neuron-inf2": "tasks.targets.neuron_inf2",
}


def names() -> list[str]:
    return sorted(TARGET_MODULES)


def get(name: str) -> Target:
    try:
        module = TARGET_MODULES[name]
    except KeyError:
        raise ValueError(f"unknown target {name!r}; known targets: {', '.join(names())}") from None
    return importlib.import_module(module).TARGET


def needs_format(exported: ExportedModel, fmt: str, target: str) -> str:
    if fmt in exported.formats:
        return ""
    return f"{target} compiles from {fmt}, which a {exported.framework} export does not write"


class SingleFormatTarget:
    """What the targets that compile from one export format and run every operator on one device share:
    the format check, the fingerprint from a per-precision flags table, and the compile report.
    Subclasses set the class attributes and ``flags_by_precision``, and write compile and load."""

    name: str
    compiler: str  # as reports name it, e.g. "torch-inductor-aot"
    compiler_package: str  # the distribution whose version is the compiler's, e.g. "torch"
    source_format: str  # which ExportedModel.formats entry it compiles from
    device: str  # where the compiled operators run
    flags_by_precision: dict[str, list[str]]
    fixed_batch = False

    @property
    def precisions(self) -> tuple[str, ...]:
        return tuple(self.flags_by_precision)

    def accepts(self, exported: ExportedModel) -> str:
        return needs_format(exported, self.source_format, self.name)

    def flags(self, config: CompileConfig) -> list[str]:
        """The compiler flags of ``config``; a precision this target does not compile is a CompileError."""
        if config.precision not in self.flags_by_precision:
            raise CompileError(f"{self.name} cannot compile precision {config.precision!r}")
        return self.flags_by_precision[config.precision]

    def fingerprint(self, exported: ExportedModel, config: CompileConfig) -> Fingerprint:
        return Fingerprint(
            compiler=self.compiler,
            compiler_version=package_version(self.compiler_package),
            flags=self.flags(config),
            source_format=self.source_format,
        )

    def report(self, config: CompileConfig, compiler_version: str, operators: int) -> CompileReport:
        """The compile report of a graph placed whole on :attr:`device`."""
        return CompileReport(
            compiler=self.compiler,
            compiler_version=compiler_version,
            flags=self.flags(config),
            device=self.device,
            operators_total=operators,
            operators_on_device=operators,
        )


def package_version(distribution: str) -> str:
    """Installed version of a distribution, read without importing it ("" if not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return ""


def availability() -> dict[str, tuple[bool, str]]:
    return {name: get(name).available() for name in names()}
