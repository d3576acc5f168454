"""The sweep of one subject: which points to measure, in what order, and where to stop.

The sweep doubles the batch size (from the params' grid) at one stream until the gain
falls under 5 % or the runtime fails (memory), then doubles the number of streams at
the best batch while throughput still grows by 5 %. Each point is measured by
tasks.benchmark.windows, racing the best so far, on the streams of tasks.benchmark.streams.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tasks.benchmark.streams import CopyProcesses, QueueStreams, Streams, ThreadStreams
from tasks.benchmark.windows import Harness, measure_streams
from tasks.core.batching import Predict, RequestQueue
from tasks.core.records import CompiledArtifact
from tasks.core.results import BenchmarkPoint

Loader = Callable[[int], Predict]  # batch size -> a predictor (one per stream)
# (batch size, requests in flight) -> the predictors sharing one runtime instance, or its own queue of that
# many requests, and its settings
# (batch size, requests in flight) -> the target's own streams and their settings, or None: one predictor per stream
StreamLoader = Callable[[int, int], tuple[list[Predict] | RequestQueue, dict[str, str]] | None]


class Sweep:
    """Measures points of one subject, keeping one predictor per (batch size, stream) for reuse."""

    def __init__(
        self,
        loader: Loader,
        inputs: dict[str, np.ndarray],
        harness: Harness,
        device: str = "CPU",
        stream_loader: StreamLoader | None = None,
        on_point: Callable[[BenchmarkPoint], None] | None = None,
    ):
        self.loader, self.inputs, self.harness, self.device = loader, inputs, harness, device
        self.on_point = on_point  # told each point as it is measured: a long sweep says how far along it is
        # a runtime that serves many requests from one instance in a mode chosen by how many (OpenVINO's
        # THROUGHPUT hint) is loaded per point, not per stream
        self.stream_loader = stream_loader
        self.runtime_settings: dict[str, str] = {}
        self.predictors: dict[int, list[Predict]] = {}
        self.points: list[BenchmarkPoint] = []
        self.notes: list[str] = []

    def batch(self, batch_size: int) -> dict[str, np.ndarray]:
        return {k: np.ascontiguousarray(np.resize(v, (batch_size, *v.shape[1:]))) for k, v in self.inputs.items()}

    def describe(self, step: tuple[int, ...]) -> str:
        return f"batch {step[0]} x {step[1]} streams"

    def streams(self, batch_size: int, concurrency: int) -> Streams:
        loaded = self.stream_loader(batch_size, concurrency) if self.stream_loader is not None else None
        if loaded is not None:
            requests, self.runtime_settings = loaded
            batch = self.batch(batch_size)
            return ThreadStreams(requests, batch) if isinstance(requests, list) else QueueStreams(requests, batch)
        predictors = self.predictors.setdefault(batch_size, [])
        while len(predictors) < concurrency:
            predictors.append(self.loader(batch_size))
        return ThreadStreams(predictors[:concurrency], self.batch(batch_size))

    def point(self, batch_size: int, *shape: int, to_beat: float | None = None) -> BenchmarkPoint | None:
        """Measure one point; None (with a note) where the runtime fails, e.g. out of memory."""
        try:
            streams = self.streams(batch_size, *shape)
            point = measure_streams(streams, batch_size, self.harness, self.device, to_beat)
            if self.runtime_settings:
                point = point.model_copy(update={"runtime": self.runtime_settings})
        except Exception as exc:  # MemoryError, a runtime's allocation failure, ...
            self.notes.append(f"{self.describe((batch_size, *shape))} failed: {type(exc).__name__}: {exc}"[:300])
            return None
        self.points.append(point)
        if self.on_point is not None:
            self.on_point(point)
        return point

    def _walk(self, steps: list[tuple[int, ...]], what: str, best: BenchmarkPoint | None) -> BenchmarkPoint | None:
        """Measure steps in order until ``patience`` steps in a row gain under min_gain."""
        misses = 0
        for step in steps:
            point = self.point(*step, to_beat=best.throughput if best else None)
            if point is None:
                break
            if best is None or point.throughput >= best.throughput * (1 + self.harness.min_gain):
                best, misses = point, 0
                continue
            best = max(best, point, key=lambda p: p.throughput)
            misses += 1
            if misses >= self.harness.patience:
                self.notes.append(
                    f"{what} sweep stopped at {self.describe(step)}: "
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


class CopySweep(Sweep):
    """For targets that pin a model copy to device cores (Neuron): points are (batch, copies, streams per copy).

    As NeuronPerf does: batch sizes at one copy with one stream, then copies doubling up to every
    core group of the host at the best batch, then two streams per copy (one call in flight while
    the next one's inputs are sent).
    """

    def __init__(self, artifact: CompiledArtifact, inputs, harness: Harness, device: str, env: str, groups: list[str]):
        super().__init__(lambda _batch_size: None, inputs, harness, device)
        self.artifact, self.env, self.groups = artifact, env, groups

    def describe(self, step: tuple[int, ...]) -> str:
        return f"batch {step[0]} x {step[1]} copies x {step[2]} streams"

    def streams(self, batch_size: int, copies: int, streams_per_copy: int) -> Streams:
        return CopyProcesses(self.artifact, self.batch(batch_size), self.env, self.groups[:copies], streams_per_copy)

    def adaptive(self, batch_sizes: list[int]) -> None:
        best = self._walk([(b, 1, 1) for b in batch_sizes], "batch", None)
        if best is None:
            return
        copies = [(best.batch_size, n, 1) for n in copy_counts(len(self.groups)) if n > 1]
        best = self._walk(copies, "copies", best)
        self._walk([(best.batch_size, best.copies, 2)], "streams per copy", best)


def copy_counts(max_copies: int) -> list[int]:
    """Copies to try: doubling from 1, ending with every core group of the host in use (NeuronPerf's MAX)."""
    counts = [1]
    while counts[-1] * 2 < max_copies:
        counts.append(counts[-1] * 2)
    return counts + [max_copies] if max_copies > 1 else counts
