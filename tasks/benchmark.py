"""Benchmark stage: throughput and latency per batch size, for compiled configs and the CPU baseline."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from tasks import dataset as datasets
from tasks import targets
from tasks.compile import verify
from tasks.export import load_exported_pytorch
from tasks.records import BenchmarkPoint, BenchmarkResult, CompiledArtifact, DatasetRef, ExportedModel
from tasks.targets import Predict

WARMUP_SECONDS = 0.5
MEASURE_SECONDS = 2.0
MIN_ITERATIONS = 10


def measure(predict: Predict, batch: np.ndarray, measure_s: float = MEASURE_SECONDS) -> BenchmarkPoint:
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
        batch_size=len(batch),
        throughput=round(len(batch) * len(latencies) / elapsed, 2),
        latency_ms_p50=round(float(np.percentile(ms, 50)), 3),
        latency_ms_p90=round(float(np.percentile(ms, 90)), 3),
        latency_ms_p99=round(float(np.percentile(ms, 99)), 3),
        iterations=len(latencies),
    )


def sweep(
    subject: str, make_predict: Callable[[int], Predict], dataset_ref: DatasetRef, batch_sizes: list[int]
) -> BenchmarkResult:
    inputs = datasets.load(dataset_ref).inputs(0, max(batch_sizes))
    points = []
    for batch_size in batch_sizes:
        batch = np.ascontiguousarray(np.resize(inputs, (batch_size, *inputs.shape[1:])))
        points.append(measure(make_predict(batch_size), batch))
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
    """The framework model itself, with the framework's own threading, measured the same way."""
    import torch

    model = load_exported_pytorch(exported)

    def make_predict(_batch_size: int) -> Predict:
        def predict(batch: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return model(torch.from_numpy(batch)).numpy()

        return predict

    return sweep("baseline", make_predict, dataset_ref, batch_sizes)
