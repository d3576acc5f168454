"""The whole interface of a compile target, and what several targets share.

Everything known about one target lives on its ``TARGET`` object: whether it can compile here, which
configs it makes of a run's params, how it compiles and loads, how its model copies are pinned to device
cores, what the registered model needs at serving time, and which serving runtime reads its files.
Nothing else in the tree names a target.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Protocol

import numpy as np

from tasks.core.batching import Predict, RequestQueue, is_token_input
from tasks.core.files import write_json
from tasks.core.params import PipelineParams
from tasks.core.records import CompileConfig, CompiledArtifact, CompileReport, ExportedModel, Fingerprint
from tasks.core.store import fetch
from tasks.serving.runtimes.base import ServingLayout


class CompileError(RuntimeError):
    """A config could not be compiled; the message names the cause (e.g. an unsupported operator)."""


@dataclass(frozen=True)
class CopyPinning:
    """Model copies each run in a process of their own, pinned to device cores through an environment variable."""

    env: str  # e.g. NEURON_RT_VISIBLE_CORES
    groups: list[str] = field(default_factory=list)  # one value per copy the host can hold, e.g. ["0-3", "4-7"]


class Target(Protocol):
    name: str
    precisions: tuple[str, ...]  # precisions this target can compile to
    runtime_requirements: tuple[str, ...]  # pip requirements of the registered model at serving time
    serving_device: str  # what a serving pod requests: "cpu", "gpu" or "neuron"
    # Where it runs on a fleet (Airflow queues): compile_queue compiles it; run_queue is its host class, whose hosts
    # validate and benchmark it (beside a CPU baseline measured there) and smoke-test its promoted versions.
    compile_queue: str  # e.g. "compile" (the CPU compile fleet), "gpu" (TensorRT builds on the GPU it runs on)
    run_queue: str  # e.g. "cpu", "inf1", "inf2", "gpu"

    def available(self) -> tuple[bool, str]:
        """Whether this target can compile here, and why not."""

    def accepts(self, exported: ExportedModel) -> str:
        """Why this target cannot compile ``exported`` (e.g. a source format it does not read), or ""."""

    def precision_missing(self, precision: str) -> str:
        """Why ``precision`` would not run in hardware here (e.g. bf16 on a CPU without bf16 instructions), or ""."""

    def configs(self, precision: str, params: PipelineParams) -> list[CompileConfig]:
        """The configs of one precision: one for any batch size, or one per batch size (like Neuron)."""

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
        """A function that runs one batch of ``batch_size`` samples and returns every output by name."""

    def copy_pinning(self, artifact: CompiledArtifact) -> CopyPinning | None:
        """How the benchmark pins copies of ``artifact`` to device cores; None: streams share one process."""

    def serving_layout(self, files: list[str]) -> ServingLayout | None:
        """The serving runtime's layout of an artifact with ``files``; None if no runtime reads them."""

    # Hooks with a default (TargetDefaults), which a target overrides where it has a way of its own.

    def load_streams(
        self, artifact: CompiledArtifact, batch_size: int, in_flight: int
    ) -> tuple[list[Predict] | RequestQueue, dict[str, str]] | None:
        """``in_flight`` requests at once in the runtime's own throughput mode (predictors, one per stream, or the
        runtime's request queue) and the settings used; None: the harness loads one predictor per stream."""

    def calibration_free(self, exported: ExportedModel, config: CompileConfig) -> bool:
        """Whether ``config`` (an int8 one) quantises ``exported`` without calibration inputs (dynamic int8)."""


class TargetDefaults:
    """The default of each hook of :class:`Target` that a target may leave out."""

    def load_streams(
        self, artifact: CompiledArtifact, batch_size: int, in_flight: int
    ) -> tuple[list[Predict] | RequestQueue, dict[str, str]] | None:
        return None

    def calibration_free(self, exported: ExportedModel, config: CompileConfig) -> bool:
        return False


SIGNATURE_FILE = "signature.json"  # input and output names, for runtimes that take and give tensors by position


def write_signature(out_dir: Path, exported: ExportedModel) -> None:
    write_json(out_dir / SIGNATURE_FILE, {"inputs": [s.name for s in exported.inputs],
                                          "outputs": [s.name for s in exported.outputs]})  # fmt: skip


def read_signature(directory: Path) -> tuple[list[str], list[str]]:
    """Input and output names, in the order the compiled module takes and gives them."""
    signature = json.loads((directory / SIGNATURE_FILE).read_text())
    return signature["inputs"], signature["outputs"]


def fixed_batch_configs(name: str, precision: str, params: PipelineParams, **extra) -> list[CompileConfig]:
    """One config per batch size of the run, for targets whose artifact runs one batch size only."""
    return [CompileConfig(target=name, precision=precision, batch_size=b, **extra) for b in params.batch_sizes]


def static_shape_configs(name: str, precision: str, params: PipelineParams, **extra) -> list[CompileConfig]:
    """One config per batch size and sequence-length bucket, for targets whose artifact fixes every dimension
    (Neuron): without buckets, the export's own sequence length."""
    batches = fixed_batch_configs(name, precision, params, **extra)
    if not params.buckets:
        return batches
    return [c.model_copy(update={"sequence_length": length}) for c in batches for length in params.buckets]


NO_CALIBRATION = (
    "int8 quantisation needs calibration data (the dataset's calibration inputs, never its validation samples), "
    "and none was given"
)


def calibration_items(calibration: dict[str, np.ndarray] | None, names: list[str]) -> list[dict[str, np.ndarray]]:
    """The calibration inputs ``names``, one sample per item, as NNCF's Dataset takes them; refuses no calibration
    data and data without one of the model's inputs, naming them."""
    if not calibration:
        raise CompileError(NO_CALIBRATION)
    missing = sorted(set(names) - set(calibration))
    if missing:
        raise CompileError(f"calibration data has no inputs {missing}; it holds {sorted(calibration)}")
    count = len(calibration[names[0]])
    return [{name: calibration[name][i : i + 1] for name in names} for i in range(count)]


# The share of each of the gate's allowances an accuracy-aware quantiser may use on the calibration inputs: the gate
# then judges the int8 model on validation samples the quantiser never saw, with the other half to spare.
QUANTISER_SHARE = 0.5


def takes_tokens(exported: ExportedModel) -> bool:
    """A transformer, as quantisers tell one: a model that takes token ids. NNCF's transformer recipe
    (``model_type=TRANSFORMER``) is written for these."""
    return any(map(is_token_input, exported.inputs))


def needs_format(exported: ExportedModel, fmt: str, target: str) -> str:
    if fmt in exported.formats:
        return ""
    return f"{target} compiles from {fmt}, which a {exported.framework} export does not write"


class SingleFormatTarget(TargetDefaults):
    """What the targets that compile from one export format and run every operator on one device share:
    the format check, the fingerprint from a per-precision flags table, and the compile report.
    Subclasses set the class attributes and ``flags_by_precision``, and write compile and load."""

    name: str
    compiler: str  # as reports name it, e.g. "torch-inductor-aot"
    compiler_package: str  # the distribution whose version is the compiler's, e.g. "torch"
    source_format: str  # which ExportedModel.formats entry it compiles from
    device: str  # where the compiled operators run
    flags_by_precision: dict[str, list[str]]
    runtime_requirements: tuple[str, ...]
    serving_device = "cpu"
    compile_queue = "compile"
    run_queue = "cpu"

    @property
    def precisions(self) -> tuple[str, ...]:
        return tuple(self.flags_by_precision)

    def accepts(self, exported: ExportedModel) -> str:
        return needs_format(exported, self.source_format, self.name)

    def precision_missing(self, precision: str) -> str:
        return ""

    def configs(self, precision: str, params: PipelineParams) -> list[CompileConfig]:
        return [CompileConfig(target=self.name, precision=precision)]  # the artifact takes any batch size

    def copy_pinning(self, artifact: CompiledArtifact) -> CopyPinning | None:
        return None  # streams are threads of one process

    def source(self, exported: ExportedModel, config: CompileConfig) -> Path:
        """The export file this target compiles ``config`` from; a precision it does not compile is a CompileError."""
        self.flags(config)
        return fetch(exported.formats[self.source_format])

    def flags(self, config: CompileConfig) -> list[str]:
        """The compiler flags of ``config``; a precision this target does not compile is a CompileError."""
        if config.precision not in self.flags_by_precision:
            raise CompileError(f"{self.name} cannot compile precision {config.precision!r}")
        return self.flags_by_precision[config.precision]

    def flags_for(self, exported: ExportedModel, config: CompileConfig) -> list[str]:
        """The flags of ``config`` for this model; by default the precision's, whatever the model."""
        return self.flags(config)

    def fingerprint(self, exported: ExportedModel, config: CompileConfig) -> Fingerprint:
        return Fingerprint(
            compiler=self.compiler,
            compiler_version=package_version(self.compiler_package),
            flags=self.flags_for(exported, config),
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
    try:
        return version(distribution)
    except PackageNotFoundError:
        return ""
