"""The records of what a run measured and decided: predictions, benchmark points and results, each output's
check against the baseline, gate outcomes, registration and promotion."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

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


class ValidationResult(Record):
    config: CompileConfig
    status: Status
    reason: str = ""
    predictions: Predictions | None = None
    outputs: list[OutputCheck] = Field(default_factory=list)  # every output of the model, in its declared order
    host: str = ""  # the worker that ran the validation
    truncated_share: float = 0.0  # text cut to the sequence length, as a share of the validation samples

    # One-figure summaries (progress lines, tables, the registry's tags) show one output: the class scores
    # where labels judge one, else the first.
    @property
    def primary(self) -> OutputCheck | None:
        return next((c for c in self.outputs if c.class_scores), self.outputs[0] if self.outputs else None)

    @property
    def top1_delta(self) -> float | None:
        return self.primary and self.primary.top1_delta

    @property
    def top5_delta(self) -> float | None:
        return self.primary and self.primary.top5_delta

    @property
    def top5_agreement(self) -> float | None:
        return self.primary and self.primary.top5_agreement

    @property
    def top1_agreement(self) -> float | None:
        return self.primary and self.primary.top1_agreement

    @property
    def cosine_min(self) -> float | None:
        return self.primary and self.primary.cosine_min

    @property
    def max_abs_diff(self) -> float | None:
        return self.primary and self.primary.max_abs_diff

    @property
    def max_rel_diff(self) -> float | None:
        return self.primary and self.primary.max_rel_diff

    @property
    def out_of_tolerance(self) -> float | None:
        return self.primary and self.primary.out_of_tolerance

    @property
    def nonfinite_outputs(self) -> int:
        """NaN or Inf values over every output."""
        return sum(check.nonfinite for check in self.outputs)


class ConfigOutcome(Record):
    """Everything known about one config after compile, validate, benchmark and gate."""

    compiled: CompiledArtifact
    validation: ValidationResult | None = None
    benchmark: BenchmarkResult | None = None
    # "undecided": no expectation failed, but the validation set cannot tell a figure from its threshold
    gate: Literal["pass", "fail", "undecided"] = "fail"
    gate_reasons: list[str] = Field(default_factory=list)
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
