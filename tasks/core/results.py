"""The records of what a run measured: predictions, benchmark points and results, the baseline. Each output's
check against the baseline and the table of its figures are in tasks.core.figures; what the run decided from
them, in tasks.core.outcomes."""

from __future__ import annotations

from pydantic import Field

from tasks.core.records import FileRef, Status
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
