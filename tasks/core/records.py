"""The small typed records that flow between stages (through XCom as JSON): the run's context, files in the
run store, the export, compile configs and artifacts, the dataset.

They carry URIs, checksums and figures, never tensors or model bytes.
"""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import Field

from tasks.core import settings as settings_module
from tasks.core.params import PipelineParams
from tasks.core.schema import Record, TensorSpec


class RunContext(Record):
    """What every stage of one run is given: its id, its prefix in the run store, its params."""

    run_id: str
    run_uri: str  # <RUN_STORE_URI>/<run>: where the run's stages put what they hand on (tasks.core.store)
    params: PipelineParams

    @property
    def safe_id(self) -> str:
        return safe_run_id(self.run_id)

    def scratch(self, *parts: str) -> Path:
        """This host's own working directory for the run (never read by another host)."""
        return settings_module.load().scratch_dir.joinpath(self.safe_id, *parts)


def safe_run_id(run_id: str) -> str:
    """A run id as one path segment or key part (Airflow's run ids hold ':' and '+')."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", run_id).strip("._") or "run"


class FileRef(Record):
    """An object in the run store (or, inside one stage, a local file): where it is and what it holds."""

    uri: str
    sha256: str  # a directory's is its tree's (tasks.core.files.tree_sha256)
    size: int = 0
    tree: bool = False  # a directory (a prefix of objects), not one file


class ExportedModel(Record):
    name: str
    framework: str
    architecture: str  # "" where the source is not rebuilt from an architecture; Hugging Face: model type and task
    source_uri: str
    source_sha256: str
    parameters: int
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    formats: dict[str, FileRef]  # e.g. {"exported_program": ..., "onnx": ...}; a directory's sha256 is its tree's
    flops_per_sample: int | None = None  # multiply-adds x 2 of Conv/Gemm/MatMul in the ONNX graph, at batch 1
    # What turned the source into the formats: the exporter code's sha256 and its libraries' versions (the report
    # shows them; the compile cache keys on graph_sha256, what the exporter made).
    exporter: dict[str, str] = {}
    # Each format's graph and weights as the compilers read them (tasks.sources.graph_digest): what the compile
    # cache keys on, so a changed architecture anywhere upstream is a miss.
    graph_sha256: dict[str, str] = {}
    # What code from the model file runs when it is loaded, on the user's opt-in; "" for none (weights and graphs).
    model_code: str = ""


class CompileConfig(Record):
    target: str
    precision: str
    batch_size: int | None = None  # None: the artifact accepts any batch size
    pipeline_cores: int | None = None  # Neuron inf1 pipeline mode; None: the pipelining guide's default
    # Accuracy-aware int8: the largest loss of the gate's own figures, on the calibration inputs, that the quantiser
    # may leave before it keeps layers in higher precision (results.quantiser_tolerance), and the
    # output labels judge (set by the compile stage from the dataset: class scores, else every output by cosine).
    quantiser_tolerance: dict[str, float] = Field(default_factory=dict)
    judged_output: str | None = None
    calibration_method: str | None = None  # ONNX Runtime int8: NNCF (None too), MinMax, Entropy or Percentile
    sequence_length: int | None = None  # a static-shape target's bucket; None: the export's own length

    @property
    def key(self) -> str:
        """Readable, unique name of the config, e.g. ``openvino-bf16`` or ``neuron-inf1-fp32-bs8``."""
        suffix = f"-bs{self.batch_size}" if self.batch_size else ""
        suffix += f"-seq{self.sequence_length}" if self.sequence_length else ""
        suffix += f"-pc{self.pipeline_cores}" if self.pipeline_cores is not None else ""
        return f"{self.target}-{self.precision}{suffix}"


class Status(StrEnum):
    """How a stage ended for one subject (a config, a target), as Model Navigator's CommandStatus says it."""

    OK = "ok"
    FAILED = "failed"  # it ran and did not succeed; the reason says why
    SKIPPED = "skipped"  # it did not run: nothing to do, or what it needs is missing; the reason says which


class Outcome(Record):
    """One stage's answer for one subject where there is no richer record: e.g. a target the plan skipped."""

    subject: str
    status: Status
    reason: str = ""


class Plan(Record):
    configs: list[CompileConfig]
    skipped: list[Outcome] = Field(default_factory=list)  # targets that cannot compile this model here, and why


class Fingerprint(Record):
    """What a target's output depends on besides the model: part of the compile-cache key."""

    compiler: str
    compiler_version: str
    flags: list[str] = Field(default_factory=list)
    source_format: str  # which of ExportedModel.formats the target compiles from


class NamedFile(Record):
    name: str  # path inside the compiled artifact
    sha256: str
    size: int


class CompileReport(Record):
    """What the compiler did: where the operators run, with which flags, which device binaries it made."""

    compiler: str
    compiler_version: str
    flags: list[str] = Field(default_factory=list)
    device: str = "CPU"  # where the compiled operators run
    operators_total: int | None = None  # operators in the graph given to the compiler
    operators_on_device: int | None = None  # of those, placed on the device
    device_binaries: list[NamedFile] = Field(default_factory=list)  # e.g. Neuron NEFF files
    notes: list[str] = Field(default_factory=list)

    @property
    def on_device_share(self) -> float | None:
        if not self.operators_total or self.operators_on_device is None:
            return None
        return self.operators_on_device / self.operators_total


CacheStatus = Literal["off", "miss", "hit", "rebuilt"]


class CompiledArtifact(Record):
    config: CompileConfig
    status: Status
    reason: str = ""
    uri: str = ""  # directory holding the compiled model files
    sha256: str = ""  # over the directory's files (see tasks.core.files.tree_sha256)
    files: list[str] = Field(default_factory=list)
    compiler: str = ""
    compiler_version: str = ""
    report: CompileReport | None = None
    compile_seconds: float = 0.0  # compiler wall time (for a cache hit: of the compile that made the entry)
    peak_memory_mb: float = 0.0  # peak resident memory of the compiler process tree
    stage_seconds: float = 0.0  # wall time of this compile stage, cache lookups included
    cache: CacheStatus = "off"  # rebuilt: the cache entry failed its sha256 check and was compiled again
    cache_key: str = ""
    log_uri: str = ""
    log_sha256: str = ""
    host: str = ""  # the worker that compiled it (or took it from the compile cache)

    @property
    def ref(self) -> FileRef:
        """The compiled files as one object of the run store (a tree)."""
        return FileRef(uri=self.uri, sha256=self.sha256, tree=True)

    @property
    def log_ref(self) -> FileRef | None:
        return FileRef(uri=self.log_uri, sha256=self.log_sha256) if self.log_uri and self.log_sha256 else None


class DatasetRef(Record):
    uri: str
    sha256: str
    name: str
    samples: int
    inputs: list[str]  # array names in the file, matched to the model's inputs
    labelled: bool  # whether samples carry class labels (top-k accuracy) or only outputs are compared
    sources: list[str] = Field(default_factory=list)  # e.g. the photos the samples were cut from
    probe: str = ""  # the sample whose top-5 the summary shows side by side
    calibration_uri: str = ""  # int8 calibration inputs, never the validation samples
    calibration_sha256: str = ""
    calibration_samples: int = 0
    class_output: str | None = None  # the output the labels judge; None for unlabelled data
    calibration_sources: list[str] = Field(default_factory=list)  # where the calibration inputs come from
    sequence_length: int | None = None  # text: the tokens per sample, and how many samples were cut to it
    truncated_samples: int = 0

    @property
    def truncated_share(self) -> float:
        return self.truncated_samples / self.samples if self.samples else 0.0

    @property
    def ref(self) -> FileRef:
        return FileRef(uri=self.uri, sha256=self.sha256)

    @property
    def calibration_ref(self) -> FileRef | None:
        return FileRef(uri=self.calibration_uri, sha256=self.calibration_sha256) if self.calibration_uri else None
