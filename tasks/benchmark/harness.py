"""The benchmark harness: it sweeps batch size and concurrency until throughput stops growing.

These are the entry points the pipeline's stages call: a compiled artifact's sweep and the CPU
baseline's, which is measured by the same harness in the same run, with the run's settings and
this host's context. The harness itself is in three modules:

- tasks.benchmark.sweep: which points a subject's sweep measures, and where it stops;
- tasks.benchmark.windows: one point's settings (``Harness``), warm-up, windows and racing;
- tasks.benchmark.streams: the threads, runtime queues and model-copy processes that make its calls.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

import numpy as np

from tasks import targets
from tasks.benchmark import machine
from tasks.benchmark.sweep import CopySweep, Loader, StreamLoader, Sweep
from tasks.benchmark.windows import Harness
from tasks.core import settings as settings_module
from tasks.core.params import PipelineParams
from tasks.core.records import CompiledArtifact, DatasetRef, ExportedModel, Status
from tasks.core.results import BenchmarkPoint, BenchmarkResult, MachineContext
from tasks.core.store import artifact_dir
from tasks.datasets import prepare as datasets
from tasks.sources.export import load_reference
from tasks.targets.base import Target


def harness_for(params: PipelineParams) -> Harness:
    """The harness as the run's params set it, for the baseline and every config alike.

    Points race the best so far only where the most samples/s is picked: under a latency budget a slower
    point can be the pick, so each is measured in full."""
    race = Harness.race_windows if params.selection == "max_throughput" else 0
    return Harness(window_s=params.benchmark_window_s, max_concurrency=params.max_concurrency, race_windows=race)


def machine_context() -> MachineContext:
    """This worker's CPU, cores and measured matmul peak (measured once per host, kept under the home)."""
    return machine.context(settings_module.load().home / "machine")


def _inputs(dataset_ref: DatasetRef, largest_batch: int, sequence_length: int | None = None) -> dict[str, np.ndarray]:
    """Samples to time; for a static-shape bucket, those that fit it, cut to its length."""
    data = datasets.load(dataset_ref)
    if sequence_length:
        data = data.fitting(sequence_length)[0]
        if not len(data):
            raise ValueError(f"no sample fits the {sequence_length}-token bucket")
    return data.inputs(0, min(len(data), largest_batch))


def run_sweep(
    subject: str,
    loader: Loader,
    dataset_ref: DatasetRef,
    batch_sizes: list[int],
    harness: Harness,
    device: str = "CPU",
    stream_loader: StreamLoader | None = None,
    sequence_length: int | None = None,
    on_point: Callable[[BenchmarkPoint], None] | None = None,
) -> BenchmarkResult:
    inputs = _inputs(dataset_ref, max(batch_sizes), sequence_length)
    sweep = Sweep(loader, inputs, harness, device, stream_loader, on_point)
    return _result(subject, sweep, batch_sizes)


def stream_loader_for(target: Target, artifact: CompiledArtifact) -> StreamLoader:
    """The target's own way to run several requests at once (``load_streams``; None where it has none)."""
    return lambda batch, in_flight: target.load_streams(artifact, batch, in_flight)


def _result(subject: str, sweep: Sweep, batch_sizes: list[int]) -> BenchmarkResult:
    sweep.adaptive(batch_sizes)
    if not sweep.points:
        return BenchmarkResult(
            subject=subject, status=Status.FAILED, reason="; ".join(sweep.notes) or "no point measured"
        )
    return BenchmarkResult(subject=subject, status=Status.OK, points=sweep.points, notes=sweep.notes)


def _timed(benchmark: Callable[..., BenchmarkResult]) -> Callable[..., BenchmarkResult]:
    """The result with its ``seconds``: the whole sweep's wall time, loading and racing included."""

    @functools.wraps(benchmark)
    def timed(*args, **kwargs) -> BenchmarkResult:
        started = time.monotonic()
        result = benchmark(*args, **kwargs)
        return result.model_copy(update={"seconds": round(time.monotonic() - started, 1)})

    return timed


@_timed
def benchmark_artifact(
    artifact: CompiledArtifact,
    dataset_ref: DatasetRef,
    batch_sizes: list[int],
    harness: Harness | None = None,
    on_point: Callable[[BenchmarkPoint], None] | None = None,
) -> BenchmarkResult:
    config = artifact.config
    if artifact.status != Status.OK:
        return BenchmarkResult(subject=config.key, status=Status.SKIPPED, reason=f"not compiled: {artifact.reason}")
    if config.batch_size:  # a fixed-batch artifact runs only its own batch size
        batch_sizes = [config.batch_size]
    try:
        artifact_dir(artifact)  # fetched and checked against its sha256 before anything runs
        target = targets.get(config.target)
        device = artifact.report.device if artifact.report else "CPU"
        harness = harness or Harness()
        pinning = target.copy_pinning(artifact)
        if pinning:
            inputs = _inputs(dataset_ref, max(batch_sizes), config.sequence_length)
            sweep = CopySweep(artifact, inputs, harness, device, pinning.env, pinning.groups)
            sweep.on_point = on_point
            return _result(config.key, sweep, batch_sizes)
        return run_sweep(
            config.key,
            lambda bs: target.load(artifact, bs),
            dataset_ref,
            batch_sizes,
            harness,
            device,
            stream_loader_for(target, artifact),
            config.sequence_length,
            on_point,
        )
    except Exception as exc:
        return BenchmarkResult(subject=config.key, status=Status.FAILED, reason=f"{type(exc).__name__}: {exc}")


@_timed
def benchmark_baseline(
    exported: ExportedModel,
    dataset_ref: DatasetRef,
    batch_sizes: list[int],
    harness: Harness | None = None,
    on_point: Callable[[BenchmarkPoint], None] | None = None,
) -> BenchmarkResult:
    """The source framework itself, with its own threading, measured by the same harness."""
    predict = load_reference(exported)
    return run_sweep(
        "baseline", lambda _batch_size: predict, dataset_ref, batch_sizes, harness or Harness(), on_point=on_point
    )
