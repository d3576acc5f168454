"""Benchmark stage: throughput and latency per batch size, for compiled configs and the CPU baseline."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from tasks import dataset as datasets
from tasks import targets
from tasks.compile import verify
from tasks.export import load_reference
from tasks.records import BenchmarkPoint, BenchmarkResult, CompiledArtifact, DatasetRef, ExportedModel
from tasks.targets import Predict

WARMUP_SECONDS = 0.5
MEASURE_SECONDS = 2.0
MIN_ITERATIONS = 10


def measure(
    predict: Predict, batch: dict[str, np.ndarray], batch_size: int, measure_s: float = MEASURE_SECONDS
) -> BenchmarkPoint:
    """Time repeated calls on one batch: warm-up excluded, then at least ``measure_s`` and 10 calls."""
    deadline = time.perf_counter() + WARMUP_SECONDS
    predict(batch)
    while time.perf_counter() < deadline:
        predict(batch)
    latencies = []
    started = time.perf_counter()
    while len(latencies) < MIN_ITERATIONS or time.perf_counter() - started < measure_s:
        t0 = time.perf_counter()
        predict(batch)
        latencies.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    return BenchmarkPoint(
        batch_size=batch_size,
        throughput=round(batch_size * len(latencies) / elapsed, 2),
        latency_ms_p50=round(float(np.percentile(ms, 50)), 3),
        latency_ms_p90=round(float(np.percentile(ms, 90)), 3),
        latency_ms_p99=round(float(np.percentile(ms, 99)), 3),
        iterations=len(latencies),
    )


def sweep(
    subject: str, make_predict: Callable[[int], Predict], dataset_ref: DatasetRef, batch_sizes: list[int]
) -> BenchmarkResult:
    data = datasets.load(dataset_ref)
    inputs = data.inputs(0, min(len(data), max(batch_sizes)))
    points = []
    for batch_size in batch_sizes:
        batch = {k: np.ascontiguousarray(np.resize(v, (batch_size, *v.shape[1:]))) for k, v in inputs.items()}
        points.append(measure(make_predict(batch_size), batch, batch_size))
    return BenchmarkResult(subject=subject, status="ok", points=points)


def benchmark_artifact(artifact: CompiledArtifact, dataset_ref: DatasetRef, batch_sizes: list[int]) -> BenchmarkResult:
    config = artifact.config
    if artifact.status != "ok":
        return BenchmarkResult(subject=config.key, status="failed", reason=f"not compiled: {artifact.reason}")
    if config.batch_size:  # a fixed-batch artifact runs only its own batch size
        batch_sizes = [config.batch_size]
    try:
        verify(artifact)
        target = targets.get(config.target)
        return sweep(config.key, lambda bs: target.load(artifact, bs), dataset_ref, batch_sizes)
    except Exception as exc:
        return BenchmarkResult(subject=config.key, status="failed", reason=f"{type(exc).__name__}: {exc}")


def benchmark_baseline(exported: ExportedModel, dataset_ref: DatasetRef, batch_sizes: list[int]) -> BenchmarkResult:
    """The source framework itself, with its own threading, measured the same way."""
    predict = load_reference(exported)
    return sweep("baseline", lambda _batch_size: predict, dataset_ref, batch_sizes)
