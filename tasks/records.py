"""The small typed records that flow between stages (through XCom as JSON).

They carry URIs, checksums and figures, never tensors or model bytes.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Names that become S3 keys, paths and registered-model names.
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def to_json(self) -> dict:
        return self.model_dump(mode="json")


class PipelineParams(Record):
    """What a user chooses for one pipeline run (the DAG's params)."""

    model_name: str = "mobilenet_v2"
    model_uri: str = "builtin:mobilenet_v2"
    architecture: str = "mobilenet_v2"
    framework: Literal["pytorch"] = "pytorch"
    targets: list[str] = Field(default_factory=lambda: ["onnxruntime", "openvino"], min_length=1)
    precisions: list[str] = Field(default_factory=lambda: ["fp32", "bf16", "int8"], min_length=1)
    batch_sizes: list[int] = Field(default_factory=lambda: [1, 2, 4, 8, 16], min_length=1)
    top5_tolerance_pp: float = Field(default=1.0, ge=0, le=100)
    dataset: str = "builtin:photos"

    @field_validator("model_name")
    @classmethod
    def _safe_model_name(cls, value: str) -> str:
        if not SAFE_NAME.match(value) or ".." in value:
            raise ValueError(
                f"model_name {value!r} must be 1-128 letters, digits, '.', '_' or '-', "
                "start with a letter or digit and not contain '..' (it becomes an S3 key)"
            )
        return value

    @field_validator("batch_sizes")
    @classmethod
    def _positive_batches(cls, value: list[int]) -> list[int]:
        bad = [b for b in value if b < 1 or b > 1024]
        if bad:
            raise ValueError(f"batch sizes must be between 1 and 1024, got {bad}")
        return sorted(set(value))


class RunContext(Record):
    run_id: str
    run_dir: str
    params: PipelineParams


class FileRef(Record):
    uri: str
    sha256: str
    size: int


class TensorSpec(Record):
    name: str
    shape: list[int | str]  # a string is a symbolic (dynamic) dimension, e.g. "batch"
    dtype: str


class ExportedModel(Record):
    name: str
    framework: str
    architecture: str
    source_uri: str
    source_sha256: str
    parameters: int
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    formats: dict[str, FileRef]  # e.g. {"pytorch_state_dict": ..., "onnx": ...}


class CompileConfig(Record):
    target: str
    precision: str
    batch_size: int | None = None  # None: the artifact accepts any batch size

    @property
    def key(self) -> str:
        """Readable, unique name of the config, e.g. ``openvino-bf16`` or ``neuron-fp32-bs8``."""
        suffix = f"-bs{self.batch_size}" if self.batch_size else ""
        return f"{self.target}-{self.precision}{suffix}"


Status = Literal["ok", "failed"]


class CompiledArtifact(Record):
    config: CompileConfig
    status: Status
    reason: str = ""
    uri: str = ""  # directory holding the compiled model files
    sha256: str = ""  # over the directory's files (see tasks.files.tree_sha256)
    files: list[str] = Field(default_factory=list)
    compiler: str = ""
    compiler_version: str = ""
    compile_seconds: float = 0.0
    log_uri: str = ""


class DatasetRef(Record):
    uri: str
    sha256: str
    samples: int
    photos: list[str]
    probe_photo: str  # the photo whose top-5 the summary shows side by side


class ClassScore(Record):
    class_id: int
    name: str
    probability: float


class Predictions(Record):
    """Top-1/top-5 accuracy of one model over the validation set, outputs kept in a file."""

    outputs_uri: str
    samples: int
    top1: float
    top5: float
    probe_top5: list[ClassScore]


class BenchmarkPoint(Record):
    batch_size: int
    throughput: float  # samples per second
    latency_ms_p50: float
    latency_ms_p90: float
    latency_ms_p99: float
    iterations: int


class BenchmarkResult(Record):
    subject: str  # config key, or "baseline"
    status: Status
    reason: str = ""
    points: list[BenchmarkPoint] = Field(default_factory=list)

    @property
    def best(self) -> BenchmarkPoint | None:
        return max(self.points, key=lambda p: p.throughput, default=None)


class BaselineResult(Record):
    framework: str
    predictions: Predictions
    benchmark: BenchmarkResult


class ValidationResult(Record):
    config: CompileConfig
    status: Status
    reason: str = ""
    predictions: Predictions | None = None
    top1_delta: float = 0.0  # percentage points, compiled - baseline
    top5_delta: float = 0.0
    top5_agreement: float = 0.0  # share of samples whose top-5 set equals the baseline's
    max_abs_diff: float = 0.0  # over logits


class ConfigOutcome(Record):
    """Everything known about one config after compile, validate, benchmark and gate."""

    compiled: CompiledArtifact
    validation: ValidationResult | None = None
    benchmark: BenchmarkResult | None = None
    gate: Literal["pass", "fail"] = "fail"
    gate_reasons: list[str] = Field(default_factory=list)
    mlflow_run_id: str = ""


class Registration(Record):
    registered_model: str
    version: str
    alias: str
    model_uri: str
    run_id: str
    config: CompileConfig


class Promotion(Record):
    uri: str
    endpoint_url: str | None
    manifest_uri: str
    manifest: dict
