"""The records of what a run decided: the gate's findings and verdict per config, where the record stage logged
them, the registered version and the promotion."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tasks.core.figures import FIGURE, ValidationResult, fmt
from tasks.core.records import CompileConfig, CompiledArtifact, FileRef
from tasks.core.results import BenchmarkPoint, BenchmarkResult
from tasks.core.schema import Record


class GateFinding(Record):
    """One expectation a config failed, or could not be told from its threshold: the figure (FIGURES) of one
    output, what was observed against the threshold, and the param the threshold comes from."""

    figure: str
    output: str
    observed: float | None
    comparison: Literal[">=", "<="]
    threshold: float
    params: list[str] = Field(default_factory=list)
    interval: tuple[float, float] | None = None  # its 95 % interval, where one reaches past the threshold
    verdict: Literal["fail", "undecided"] = "fail"

    @property
    def label(self) -> str:
        return FIGURE[self.figure].label if self.figure in FIGURE else self.figure

    @property
    def param(self) -> str:
        return ", ".join(self.params)

    def text(self, value: float | None) -> str:
        """A value of this finding's figure as the reports show it (``+.2f`` for pp deltas, ``.3f`` for shares)."""
        return FIGURE[self.figure].text(value) if self.figure in FIGURE else fmt(value, "g")

    @property
    def observed_text(self) -> str:
        return self.text(self.observed)

    @property
    def threshold_text(self) -> str:
        return f"{self.comparison} {self.text(self.threshold)}"

    @property
    def interval_text(self) -> str:
        return f"[{self.text(self.interval[0])}, {self.text(self.interval[1])}]" if self.interval else ""


class ConfigOutcome(Record):
    """Everything known about one config after compile, validate, benchmark and gate."""

    compiled: CompiledArtifact
    validation: ValidationResult | None = None
    benchmark: BenchmarkResult | None = None
    # "undecided": no expectation failed, but the validation set cannot tell a figure from its threshold
    gate: Literal["pass", "fail", "undecided"] = "fail"
    gate_reasons: list[str] = Field(default_factory=list)
    gate_findings: list[GateFinding] = Field(default_factory=list)  # the suite's reasons, as figures
    mlflow_run_id: str = ""


class Gated(Record):
    """The gate's verdict on every config, and its GX validation result and Data Docs in the run store."""

    outcomes: list[ConfigOutcome]
    docs: FileRef | None = None  # a tree: validation_result.json and data_docs/


class Recorded(Record):
    """Where the record task logged the pipeline run, and every config's outcome with its MLflow run id."""

    tracking_uri: str
    experiment: str
    run_id: str
    outcomes: list[ConfigOutcome]


class Registration(Record):
    registered_model: str
    version: str
    alias: str
    model_uri: str
    run_id: str
    config: CompileConfig
    selected: str = ""  # the config key the selection strategy picked
    selected_point: BenchmarkPoint | None = None  # and its measured point


class Promotion(Record):
    uri: str  # s3://bucket/prefix/<model>/<N>/
    endpoint_url: str | None
    manifest_uri: str
    manifest: dict
    version: int = 0  # serving version N
    already_promoted: bool = False  # this registry version was committed earlier; nothing was written
