"""Benchmark stage: a harness that sweeps batch size and concurrency until throughput stops growing.

Each point runs ``concurrency`` streams (threads, each with its own predictor, as a
serving process keeps one runtime instance per worker thread) on one batch. Warm-up
is excluded; then fixed windows are measured until the last three agree within 10 %
(up to a limit: a point that never settles is reported ``stable=False``, not hidden).
Throughput and latency percentiles come from those last three windows, and device
utilisation is sampled over them.

The sweep doubles the batch size (from the params' grid) at one stream until the gain
falls under 5 % or the runtime fails (memory), then doubles the number of streams at
the best batch while throughput still grows by 5 %. The CPU baseline is measured by the
same harness in the same run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tasks import dataset as datasets
from tasks import targets
from tasks.compile import verify
from tasks.export import load_reference
from tasks.records import BenchmarkPoint, BenchmarkResult, CompiledArtifact, DatasetRef, ExportedModel
from tasks.targets import Predict
from tasks.utilisation import probe_for

Loader = Callable[[int], Predict]  # batch size -> a predictor (one per stream)


@dataclass(frozen=True)
class Harness:
    window_s: float = 1.0
    warmup_s: float = 0.5
    stable_windows: int = 3  # consecutive windows that must agree
    stable_spread: float = 0.10  # (max - min) / mean of those windows
    max_windows: int = 12
    min_gain: float = 0.05  # a step must add this much throughput over the best so far ...
    patience: int = 2  # ... or the sweep stops after this many such steps in a row (one noisy dip does not end it)
    max_concurrency: int = 16


def _spread(rates: list[float]) -> float:
    """(max - min) / mean of window throughputs; 0 where nothing ran."""
    mean = float(np.mean(rates))
    return (max(rates) - min(rates)) / mean if mean > 0 else 0.0


def measure(
    predictors: list[Predict], batch: dict[str, np.ndarray], batch_size: int, harness: Harness, device: str = "CPU"
) -> BenchmarkPoint:
    """One point: ``len(predictors)`` streams calling predict on ``batch`` until the windows settle."""
    # latency of every finished call, in finishing order; list.append is atomic, and a window's calls
    # are the slice between the list's lengths at its start and end (no scan while streams run)
    latencies: list[float] = []
    stop = threading.Event()
    errors: list[BaseException] = []

    def stream(predict: Predict) -> None:
        try:
            while not stop.is_set():
                t0 = time.perf_counter()
                predict(batch)
                latencies.append(time.perf_counter() - t0)
        except BaseException as exc:  # noqa: BLE001 - reported by the caller, e.g. out of memory
            errors.append(exc)
            stop.set()

    threads = [threading.Thread(target=stream, args=(p,), daemon=True) for p in predictors]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    probe = probe_for(device)
    try:
        # warm-up: at least warmup_s and one finished call per stream
        while not errors and (time.perf_counter() - started < harness.warmup_s or len(latencies) < len(threads)):
            time.sleep(0.01)
        if errors:
            raise errors[0]
        # a window holds several calls even where one call is slow (big batches)
        window = max(harness.window_s, 4 * float(np.median(latencies)))
        windows: list[tuple[int, int, float]] = []  # (first call, end call, throughput)
        samples: list[list[float]] = []
        stable = False
        w_start, first = time.perf_counter(), len(latencies)
        probe.start()
        while len(windows) < harness.max_windows:
            time.sleep(window)
            w_end, end = time.perf_counter(), len(latencies)
            if errors:
                raise errors[0]
            windows.append((first, end, (end - first) * batch_size / (w_end - w_start)))
            samples.append(probe.sample())
            w_start, first = w_end, end
            last = [w[2] for w in windows[-harness.stable_windows :]]
            if len(last) == harness.stable_windows and min(last) > 0 and _spread(last) <= harness.stable_spread:
                stable = True
                break
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        probe.stop()
    final = windows[-harness.stable_windows :]
    in_final = latencies[final[0][0] : final[-1][1]] or latencies
    rates = [w[2] for w in final]
    ms = np.array(in_final) * 1000
    utilisation = np.mean(samples[-len(final) :], axis=0).tolist() if samples and samples[0] else []
    return BenchmarkPoint(
        batch_size=batch_size,
        concurrency=len(predictors),
        throughput=round(float(np.mean(rates)), 2),
        latency_ms_p50=round(float(np.percentile(ms, 50)), 3),
        latency_ms_p90=round(float(np.percentile(ms, 90)), 3),
        latency_ms_p99=round(float(np.percentile(ms, 99)), 3),
        iterations=len(in_final),
        windows=len(windows),
        spread=round(_spread(rates), 4),
        stable=stable,
        device=probe.device,
        utilisation=[round(u, 1) for u in utilisation],
    )


class Sweep:
    """Measures points of one subject, keeping one predictor per (batch size, stream) for reuse."""

    def __init__(self, loader: Loader, inputs: dict[str, np.ndarray], harness: Harness, device: str = "CPU"):
        self.loader, self.inputs, self.harness, self.device = loader, inputs, harness, device
        self.predictors: dict[int, list[Predict]] = {}
        self.points: list[BenchmarkPoint] = []
        self.notes: list[str] = []

    def batch(self, batch_size: int) -> dict[str, np.ndarray]:
        return {k: np.ascontiguousarray(np.resize(v, (batch_size, *v.shape[1:]))) for k, v in self.inputs.items()}

    def point(self, batch_size: int, concurrency: int) -> BenchmarkPoint | None:
        """Measure one point; None (with a note) where the runtime fails, e.g. out of memory."""
        try:
            streams = self.predictors.setdefault(batch_size, [])
            while len(streams) < concurrency:
                streams.append(self.loader(batch_size))
            point = measure(streams[:concurrency], self.batch(batch_size), batch_size, self.harness, self.device)
        except Exception as exc:  # MemoryError, a runtime's allocation failure, ...
            self.notes.append(f"batch {batch_size} x {concurrency} streams failed: {type(exc).__name__}: {exc}"[:300])
            return None
        self.points.append(point)
        return point

    def _walk(self, steps: list[tuple[int, int]], what: str, best: BenchmarkPoint | None) -> BenchmarkPoint | None:
        """Measure ``(batch, streams)`` steps in order until ``patience`` steps in a row gain under min_gain."""
        misses = 0
        for batch_size, concurrency in steps:
            point = self.point(batch_size, concurrency)
            if point is None:
                break
            if best is None or point.throughput >= best.throughput * (1 + self.harness.min_gain):
                best, misses = point, 0
                continue
            best = max(best, point, key=lambda p: p.throughput)
            misses += 1
            if misses >= self.harness.patience:
                self.notes.append(
                    f"{what} sweep stopped at batch {batch_size} x {concurrency}: "
                    f"{misses} steps in a row gained under {self.harness.min_gain:.0%}"
                )
                break
        return best

    def adaptive(self, batch_sizes: list[int]) -> None:
        """Batch sizes up at one stream while they gain, then streams up (doubling) at the best batch."""
        best = self._walk([(b, 1) for b in batch_sizes], "batch", None)
        if best is None:
            return
        streams, concurrency = [], 2
        while concurrency <= self.harness.max_concurrency:
            streams.append((best.batch_size, concurrency))
            concurrency *= 2
        self._walk(streams, "stream", best)

    def grid(self, batch_sizes: list[int], concurrencies: list[int]) -> None:
        """Every point of the grid (what the adaptive sweep is checked against)."""
        for batch_size in batch_sizes:
            for concurrency in concurrencies:
                self.point(batch_size, concurrency)


def _inputs(dataset_ref: DatasetRef, largest_batch: int) -> dict[str, np.ndarray]:
    data = datasets.load(dataset_ref)
    return data.inputs(0, min(len(data), largest_batch))


def run_sweep(
    subject: str,
    loader: Loader,
    dataset_ref: DatasetRef,
    batch_sizes: list[int],
    harness: Harness,
    device: str = "CPU",
) -> BenchmarkResult:
    sweep = Sweep(loader, _inputs(dataset_ref, max(batch_sizes)), harness, device)
    sweep.adaptive(batch_sizes)
    if not sweep.points:
        return BenchmarkResult(subject=subject, status="failed", reason="; ".join(sweep.notes) or "no point measured")
    return BenchmarkResult(subject=subject, status="ok", points=sweep.points, notes=sweep.notes)


def benchmark_artifact(
    artifact: CompiledArtifact, dataset_ref: DatasetRef, batch_sizes: list[int], harness: Harness | None = None
) -> BenchmarkResult:
    config = artifact.config
    if artifact.status != "ok":
        return BenchmarkResult(subject=config.key, status="failed", reason=f"not compiled: {artifact.reason}")
    if config.batch_size:  # a fixed-batch artifact runs only its own batch size
        batch_sizes = [config.batch_size]
    try:
        verify(artifact)
        target = targets.get(config.target)
        device = artifact.report.device if artifact.report else "CPU"
        return run_sweep(
            config.key, lambda bs: target.load(artifact, bs), dataset_ref, batch_sizes, harness or Harness(), device
        )
    except Exception as exc:
        return BenchmarkResult(subject=config.key, status="failed", reason=f"{type(exc).__name__}: {exc}")


def benchmark_baseline(
    exported: ExportedModel, dataset_ref: DatasetRef, batch_sizes: list[int], harness: Harness | None = None
) -> BenchmarkResult:
    """The source framework itself, with its own threading, measured by the same harness."""
    predict = load_reference(exported)
    return run_sweep("baseline", lambda _batch_size: predict, dataset_ref, batch_sizes, harness or Harness())
