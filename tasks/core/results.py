"""The records of what a run measured and decided: predictions, benchmark points and results, each output's
check against the baseline, gate outcomes, registration and promotion."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from tasks.core.params import PipelineParams
from tasks.core.records import CompileConfig, CompiledArtifact, FileRef, Status
from tasks.core.schema import Record


class ClassScore(Record):
    class_id: int
    name: str
    probability: float


class Predictions(Record):
    """Accuracy of one model over the validation set (where labelled), outputs kept in a file."""

    outputs_uri: str  # .npz, one array per output name
    samples: int
    outputs_sha256: str = ""
    class_output: str | None = None  # the output judged by top-k against the labels (None: no labels)
    top1: float | None = None
    top5: float | None = None
    probe_top5: list[ClassScore] = Field(default_factory=list)

    @property
    def outputs_ref(self) -> FileRef:
        return FileRef(uri=self.outputs_uri, sha256=self.outputs_sha256)


class BenchmarkPoint(Record):
    batch_size: int
    concurrency: int = 1  # streams with a request in flight, over all copies
    copies: int = 1  # model copies, each a process pinned to its own device cores (Neuron); else 1
    throughput: float  # samples per second, over the final (agreeing) windows
    latency_ms_p50: float  # of one request (one batch)
    latency_ms_p90: float
    latency_ms_p99: float
    iterations: int  # requests in the final windows
    windows: int = 0  # measurement windows run, warm-up excluded
    spread: float = 0.0  # (max - min) / mean throughput of the final windows
    stable: bool = True  # False: the windows never agreed within the harness's limit
    stopped_early: bool = False  # its first windows were clearly under the sweep's best: measured no further
    device: str = "CPU"
    utilisation: list[float] = Field(default_factory=list)  # percent per CPU core, GPU or NeuronCore
    visible_cores: list[str] = Field(default_factory=list)  # per copy, as its process saw them (e.g. "0-3")
    # the runtime's settings the point ran with, to be written into the serving config where it won
    # (OpenVINO: PERFORMANCE_HINT, NUM_STREAMS); empty where the runtime has no such mode
    runtime: dict[str, str] = Field(default_factory=dict)

    @property
    def summary(self) -> str:
        """e.g. ``812.3 samples/s at batch 8 x 4 streams, p99 12.1 ms``."""
        stability = "" if self.stable else f", unstable (spread {self.spread:.0%})"
        stability += ", stopped early under the best" if self.stopped_early else ""
        return f"{self.throughput:.1f} samples/s at batch {self.shape}, p99 {self.latency_ms_p99:.1f} ms{stability}"

    @property
    def shape(self) -> str:
        """e.g. ``8 x 4 streams`` or ``8 x 4 copies x 2 streams``."""
        if self.copies > 1 or self.visible_cores:
            return f"{self.batch_size} x {self.copies} copies x {self.concurrency // self.copies} streams"
        return f"{self.batch_size} x {self.concurrency} streams"


class MachineContext(Record):
    """Where a benchmark ran, and what that machine can do at most (a dense matmul's GFLOP/s)."""

    host: str
    cpu_model: str
    cores_physical: int
    cores_logical: int
    peak_gflops: dict[str, float] = Field(default_factory=dict)  # e.g. {"fp32": 180.2, "bf16": 610.5}


class BenchmarkResult(Record):
    subject: str  # config key, or "baseline"
    status: Status
    reason: str = ""
    points: list[BenchmarkPoint] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)  # why each sweep stopped, points that failed
    machine: MachineContext | None = None
    seconds: float = 0.0  # wall time of the whole sweep, loading and racing included
    waited_s: float = 0.0  # waiting for the host's other sweep or validations to end (tasks.benchmark.host_lock)

    @property
    def best(self) -> BenchmarkPoint | None:
        return max(self.points, key=lambda p: p.throughput, default=None)

    @property
    def naive(self) -> BenchmarkPoint | None:
        """Single stream at the smallest batch measured: what an untuned deployment gets."""
        single = [p for p in self.points if p.concurrency == 1]
        return min(single, key=lambda p: p.batch_size, default=None)


class BaselineResult(Record):
    """The source framework on the CPU of one host class's hosts: the reference its configs are judged against and
    the throughput their speedups divide by."""

    framework: str
    predictions: Predictions
    benchmark: BenchmarkResult
    host_class: str = "cpu"


# How an output is judged, by what it is (tasks.validation.metrics.output_rule).
OUTPUT_RULES = {
    "class scores": "top-k against the labels, and agreement with the baseline's top class",
    "embedding": "retrieval against the baseline's neighbours (recall@5), and cosine",
    "values": "absolute and relative error (a scalar or a few values per sample: cosine says nothing there)",
    "tensor": "cosine per sample, and absolute and relative error",
}


class OutputCheck(Record):
    """One output of a compiled config against the same output of the baseline, on the same samples."""

    name: str
    class_scores: bool = False  # judged by top-k against the labels (Predictions.class_output)
    top1_delta: float | None = None  # percentage points, compiled - baseline (class scores only)
    top5_delta: float | None = None
    top5_agreement: float | None = None  # share of samples whose top-5 set equals the baseline's (information)
    top1_agreement: float | None = None  # share of samples whose top class is the baseline's
    top1_in_top5: float | None = None  # share of samples whose baseline top class is in the compiled top 5
    top1_probability_shift: float | None = None  # mean |change| of the baseline top class's probability
    nonfinite: int = 0  # NaN or Inf values; where > 0 the closeness figures are None
    cosine_min: float | None = None  # lowest per-sample cosine similarity to the baseline's
    max_abs_diff: float | None = None
    max_rel_diff: float | None = None  # |a - b| / (|b| + eps), so zero outputs do not divide by zero
    out_of_tolerance: float | None = None  # share of values off by more than atol AND by more than rtol
    # Embeddings (one vector per sample, not class scores): recall@5 of each sample's nearest neighbours against
    # the baseline's (mean share kept), and the mean rank correlation of each sample's similarities (information)
    neighbour_recall: float | None = None
    similarity_rank_correlation: float | None = None
    constant: bool = False  # the same value for every sample: nothing a model computes from its input
    rule: str = ""  # which rule judged it (OUTPUT_RULES)
    # 95 % interval of each figure above that has one, by its name: a paired bootstrap over the samples' sources
    # (tasks.validation.uncertainty); absent where the samples come from one source only
    intervals: dict[str, tuple[float, float]] = {}

    @property
    def labelled(self) -> bool:
        """Class scores judged against labels (a dataset without labels has no top-k deltas)."""
        return self.class_scores and self.top1_delta is not None


class ValidationResult(Record):
    config: CompileConfig
    status: Status
    reason: str = ""
    predictions: Predictions | None = None
    outputs: list[OutputCheck] = Field(default_factory=list)  # every output of the model, in its declared order
    host: str = ""  # the worker that ran the validation
    truncated_share: float = 0.0  # text cut to the sequence length, as a share of the validation samples
    # the baseline's accuracy on the same samples (a sequence bucket's fitting samples), where labels judge one
    baseline_top1: float | None = None
    baseline_top5: float | None = None

    # One-figure summaries (progress lines, tables, the registry's tags) show one output: the class scores
    # where labels judge one, else the first.
    @property
    def primary(self) -> OutputCheck | None:
        return next((c for c in self.outputs if c.class_scores), self.outputs[0] if self.outputs else None)

    @property
    def nonfinite_values(self) -> int:
        """NaN or Inf values over every output."""
        return sum(check.nonfinite for check in self.outputs)


def fmt(value: float | None, spec: str = ".3f", missing: str = "-") -> str:
    """The one number formatter of progress lines, reports and tags: ``missing`` where there is no value."""
    return missing if value is None else format(value, spec)


# Which outputs a gate expectation judges: conditions over the gate's table (one row per output of each config).
LABELLED, UNLABELLED = "labelled==True", "labelled==False"
# Values off by atol and rtol judge numbers a consumer reads as numbers, not embeddings: retrieval reads those by
# their neighbours and direction (OUTPUT_RULES), which recall@5 and the cosine judge.
READ_AS_NUMBERS = 'labelled==False and rule!="embedding"'


@dataclass(frozen=True)
class Figure:
    """One figure of a config's validation, declared once: the gate, the record stage, the registry's tags, the
    progress lines and the report all iterate FIGURES. Its value is the OutputCheck field of its name, unless
    ``read`` says otherwise."""

    name: str
    label: str  # as a person reads it: report columns, progress lines, the review
    spec: str = ".3f"
    # The gate: at least (">=") or at most ("<=") the threshold the params give; None where the run sets none
    gate: Literal[">=", "<="] | None = None
    threshold: Callable[[PipelineParams], float | None] | None = None
    params: tuple[str, ...] = ()  # the PipelineParams fields the threshold comes from
    rows: str = ""  # the outputs it judges (a condition over the gate's table), "" for every output
    meaning: str = ""  # what a failure means, where the name does not say it
    # An exact match's value, on the figures the accuracy-aware quantiser keeps within a share of the gate's
    # allowance (metrics.quantiser_quality): the allowance is the threshold's distance from it.
    perfect: float | None = None
    metric: str = ""  # the MLflow metric of each config run (the primary output's value); "" for none
    tag: str = ""  # the registered version's tag; "" for none
    headline: tuple[str, ...] = ()  # the output rules (OUTPUT_RULES) whose progress line and review show it
    # Where the reports show it: the run report's "accuracy" (primary output) and "outputs" tables, the pages'
    # "summary" columns (a run's configs, a model's versions), the history page's version-over-version "trend"
    report: tuple[str, ...] = ()
    read: Callable[[ValidationResult, OutputCheck], float | None] | None = None

    def value(self, check: OutputCheck | None, validation: ValidationResult | None = None) -> float | None:
        if self.read is not None:
            return None if check is None or validation is None else self.read(validation, check)
        return None if check is None else getattr(check, self.name)

    def text(self, value: float | None, missing: str = "-") -> str:
        return fmt(value, self.spec, missing)

    def with_interval(self, check: OutputCheck | None, missing: str = "-") -> str:
        """The figure and its 95 % interval, ``+0.40 [-1.20, +2.01]``; the figure alone where it has none."""
        value = self.value(check)
        bounds = check.intervals.get(self.name) if check is not None and value is not None else None
        shown = self.text(value, missing)
        return shown if bounds is None else f"{shown} [{format(bounds[0], self.spec)}, {format(bounds[1], self.spec)}]"

    def describe(self, threshold: float) -> str:
        """The expectation as the gate's reasons say it, e.g. ``top1_agreement >= 0.9 (param min_top1_agreement)``."""
        source = f" (param {', '.join(self.params)})" if self.params else ""
        meaning = f" ({self.meaning})" if self.meaning else ""
        return f"{self.name} {self.gate} {threshold:g}{source}{meaning}"


CLASS_SCORES = ("class scores",)
CLOSENESS = ("embedding", "tensor")

# In the gate's order: a config's failed expectations are listed in it.
FIGURES = (
    Figure(
        "nonfinite_outputs", "NaN or Inf values", ".0f", "<=", lambda p: 0, read=lambda v, c: c.nonfinite,
        metric="nonfinite_outputs",
    ),
    Figure(
        "constant_output", "constant output", ".0f", "<=", lambda p: 0, meaning="the same output for every sample",
        read=lambda v, c: int(c.constant),
    ),
    # a validation set whose texts are mostly cut judges a model nobody will serve
    Figure(
        "truncated_share", "texts cut to fit", ".1%", "<=", lambda p: 0.5, params=("sequence_length",),
        meaning="validation texts cut to it", read=lambda v, c: v.truncated_share,
    ),
    # labelled accuracy first, as MLPerf judges reduced precision
    Figure(
        "top1_delta", "top-1 Δ (pp)", "+.2f", ">=", lambda p: -p.top1_tolerance_pp, ("top1_tolerance_pp",), LABELLED,
        metric="top1_delta_pp", report=("accuracy", "summary", "trend"),
    ),
    Figure(
        "top5_delta", "top-5 Δ (pp)", "+.2f", ">=", lambda p: -p.top5_tolerance_pp, ("top5_tolerance_pp",), LABELLED,
        metric="top5_delta_pp", tag="top5_delta_pp", headline=CLASS_SCORES, report=("accuracy", "summary", "trend"),
    ),
    # then agreement with the CPU model where it matters: the top class, and the scores themselves
    Figure(
        "top1_agreement", "top-1 agreement", ".3f", ">=", lambda p: p.min_top1_agreement, ("min_top1_agreement",),
        LABELLED, metric="top1_agreement", tag="top1_agreement", headline=CLASS_SCORES,
        report=("accuracy", "outputs", "summary"),
    ),
    Figure(
        "top1_in_top5", "baseline top-1 in top-5", ".3f", ">=", lambda p: p.min_top1_in_top5, ("min_top1_in_top5",),
        LABELLED, metric="top1_in_top5", report=("accuracy",),
    ),
    Figure(
        "top1_probability_shift", "top-1 probability shift", ".3f", "<=", lambda p: p.max_top1_probability_shift,
        ("max_top1_probability_shift",), LABELLED, perfect=0, metric="top1_probability_shift",
        headline=CLASS_SCORES, report=("accuracy", "outputs"),
    ),
    # judged only where a run sets a floor: it measures the order of the tail, not accuracy
    Figure(
        "top5_agreement", "top-5 set agreement", ".3f", ">=", lambda p: p.min_top5_agreement or None,
        ("min_top5_agreement",), LABELLED, metric="top5_agreement", tag="top5_agreement", headline=CLASS_SCORES,
        report=("accuracy", "outputs"),
    ),
    Figure(
        "cosine_min", "lowest cosine", ".5f", ">=", lambda p: p.min_cosine, ("min_cosine",), UNLABELLED, perfect=1,
        metric="cosine_min", tag="cosine_min", headline=CLOSENESS, report=("accuracy", "outputs", "summary"),
    ),
    Figure(
        "neighbour_recall", "neighbour recall@5", ".3f", ">=", lambda p: p.min_neighbour_recall,
        ("min_neighbour_recall",), UNLABELLED, perfect=1, metric="neighbour_recall", headline=("embedding",),
        report=("outputs",),
    ),
    # the share of values off by more than atol and, relatively, by more than rtol
    Figure(
        "out_of_tolerance", "out of tolerance", ".2%", "<=", lambda p: 0, ("atol", "rtol"), READ_AS_NUMBERS,
        metric="out_of_tolerance", report=("outputs",),
    ),
    Figure("max_abs_diff", "max abs diff", ".4f", metric="max_abs_diff", headline=("values",),
           report=("accuracy", "outputs")),
    Figure("max_rel_diff", "max rel diff", ".3g", metric="max_rel_diff", headline=("values",)),
    Figure("similarity_rank_correlation", "similarity rank correlation", ".3f", report=("outputs",)),
)  # fmt: skip
FIGURE = {figure.name: figure for figure in FIGURES}


def quantiser_tolerance(params: PipelineParams) -> dict[str, float]:
    """How far the gate lets each figure the accuracy-aware quantiser measures move from an exact match."""
    return {f.name: round(abs(f.threshold(params) - f.perfect), 6) for f in FIGURES if f.perfect is not None}


def said(check: OutputCheck) -> str:
    """Every figure an output's check has, e.g. ``max abs diff 0.0000, out of tolerance 0.00%, ...``."""
    return ", ".join(
        f"{f.label} {f.text(f.value(check))}" for f in FIGURES if not f.read and f.value(check) is not None
    )


def headline(check: OutputCheck) -> str:
    """An output's figures as its progress line and its review say them, e.g. ``lowest cosine 0.99990, ...``."""
    shown = [f for f in FIGURES if check.rule in f.headline and f.value(check) is not None]
    said = ", ".join(f"{f.label} {f.text(f.value(check))}" for f in shown)
    return said + (" (constant: the same output for every sample)" if check.constant else "")


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
