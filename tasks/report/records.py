"""The run report's record (report.json): what the report stage gathers from a run's stage records, typed, for the
report's tables, plots, the demo's summary and the Compile reports pages alike."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from tasks.core.figures import OutputCheck
from tasks.core.outcomes import GateFinding
from tasks.core.records import CompileReport, DatasetRef
from tasks.core.results import BenchmarkPoint, ClassScore, MachineContext
from tasks.core.schema import Record, TensorSpec


class ModelSummary(Record):
    name: str
    framework: str
    architecture: str = ""
    parameters: int = 0
    sha256: str = ""
    source_uri: str = ""
    inputs: list[TensorSpec] = Field(default_factory=list)
    flops_per_sample: int | None = None
    model_code: str = ""


class BaselineSummary(Record):
    """The source framework on the CPUs of one host class: its accuracy, and its best benchmark point."""

    framework: str
    host_class: str = "cpu"
    host: str | None = None
    top1: float | None = None
    top5: float | None = None
    samples: int | None = None
    probe_top5: list[ClassScore] = Field(default_factory=list)
    throughput: float | None = None
    batch_size: int | None = None
    benchmark: list[BenchmarkPoint] = Field(default_factory=list)
    benchmark_seconds: float | None = None


class ConfigRow(Record):
    """One config as the report shows it: compile, validation against its host class's baseline, benchmark, gate."""

    key: str
    target: str
    precision: str
    batch_size: int | None = None  # of its best point, else the compiled one (None: any)
    compile_status: str
    compile_reason: str = ""
    compile_seconds: float | None = None
    compile_stage_seconds: float | None = None
    compile_peak_memory_mb: float | None = None
    compile_cache: str = "off"
    compile_report: CompileReport | None = None
    compiler: str = ""
    compiler_version: str = ""
    artifact_sha256: str = ""
    artifact_uri: str = ""
    top1: float | None = None
    top5: float | None = None
    samples: int | None = None  # fewer than the dataset's: a bucket's samples that fit it
    sequence_length: int | None = None
    outputs: list[OutputCheck] = Field(default_factory=list)  # each output against the baseline's
    probe_top5: list[ClassScore] = Field(default_factory=list)
    throughput: float | None = None  # of its best point
    speedup: float | None = None  # against the CPU baseline measured on the same host class
    host_class: str = "cpu"
    hosts: dict[str, str] = Field(default_factory=dict)  # compiled, validated, benchmarked, baseline: which worker
    latency_ms: dict[str, float] | None = None  # p50, p90, p99 of its best point
    benchmark: list[BenchmarkPoint] = Field(default_factory=list)
    benchmark_seconds: float | None = None
    gate: Literal["pass", "fail", "undecided"] = "fail"
    gate_reasons: list[str] = Field(default_factory=list)
    gate_findings: list[GateFinding] = Field(default_factory=list)
    mlflow_run_id: str = ""

    @property
    def primary(self) -> OutputCheck | None:
        """The output one-figure columns show: the class scores where labels judge one, else the first."""
        return next((c for c in self.outputs if c.class_scores), self.outputs[0] if self.outputs else None)

    @property
    def best(self) -> BenchmarkPoint | None:
        return max(self.benchmark, key=lambda p: p.throughput, default=None)


class MlflowLinks(Record):
    tracking_uri: str
    experiment: str
    run_id: str | None = None  # the pipeline's parent run
    registered_model: str | None = None
    version: str | None = None
    alias: str | None = None


class RunReport(Record):
    run_id: str
    status: Literal["success", "failed"]
    failed_stage: str | None = None
    error: str | None = None
    params: dict[str, Any] | None = None  # the run's PipelineParams, as given
    model: ModelSummary | None = None
    machine: MachineContext | None = None
    dataset: DatasetRef | None = None
    baseline: BaselineSummary | None = None  # the CPU hosts'
    baselines: dict[str, BaselineSummary] = Field(default_factory=dict)  # by host class
    configs: list[ConfigRow] = Field(default_factory=list)
    skipped_targets: dict[str, str] = Field(default_factory=dict)  # target: why the plan skipped it
    selected: str | None = None
    selected_point: BenchmarkPoint | None = None
    selection: str | None = None
    mlflow: MlflowLinks

    @property
    def labelled(self) -> bool:
        return bool(self.dataset and self.dataset.labelled)
