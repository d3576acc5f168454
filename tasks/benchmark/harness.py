"""The benchmark harness: it sweeps batch size and concurrency until throughput stops growing.

Each point runs ``concurrency`` streams (threads, each with its own predictor, as a
serving process keeps one runtime instance per worker thread) on one batch; a target whose
runtime serves many requests from one instance (OpenVINO: the THROUGHPUT hint) loads that
instance per point with ``load_streams``, and the point records the settings it ran with; where
that instance queues its requests itself (OpenVINO's ``AsyncInferQueue``), one thread keeps its
queue full instead of a thread per request. Warm-up
is excluded; then windows are measured until the last three agree within 10 % (up to a limit: a
point that never settles is reported ``stable=False``, not hidden). A window lasts at least
``window_s`` and holds at least one call per stream, and runs from one call's end to another's:
its throughput is the samples of the calls that ended in it over the time between those ends.
Counting the calls that end in a fixed time instead is off by up to a call either way, so a slow
call needed a window of several calls (and several streams of slow calls a window of several
calls each) before three windows could agree.
Throughput and latency percentiles come from those last three windows, and device
utilisation is sampled over them.

The sweep doubles the batch size (from the params' grid) at one stream until the gain
falls under 5 % or the runtime fails (memory), then doubles the number of streams at
the best batch while throughput still grows by 5 %. The CPU baseline is measured by the
same harness in the same run.

Where the most samples/s is what is picked, a point races the sweep's best so far: once its
first two windows are both more than the stable spread (10 %) under that best, it cannot
become the best, and it stops there (``stopped_early``) instead of waiting for three windows
to agree, which on a noisy machine a losing point (too many streams fighting for the cores)
takes longest to do. The best point itself is always measured in full.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import queue as queue_module
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from tasks import targets
from tasks.benchmark import machine
from tasks.benchmark.utilisation import probe_for
from tasks.core import settings as settings_module
from tasks.core.batching import Predict, RequestQueue
from tasks.core.records import (
    BenchmarkPoint,
    BenchmarkResult,
    CompiledArtifact,
    DatasetRef,
    ExportedModel,
    MachineContext,
    PipelineParams,
    Status,
)
from tasks.core.store import artifact_dir
from tasks.datasets import prepare as datasets
from tasks.sources.export import load_reference
from tasks.targets.base import Target

Loader = Callable[[int], Predict]  # batch size -> a predictor (one per stream)
# (batch size, requests in flight) -> the predictors sharing one runtime instance, or its own queue of that
# many requests, and its settings
# (batch size, requests in flight) -> the target's own streams and their settings, or None: one predictor per stream
StreamLoader = Callable[[int, int], tuple[list[Predict] | RequestQueue, dict[str, str]] | None]


class Clock(Protocol):
    """What the harness waits and times windows by: the real one, or a test's simulated one."""

    def now(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class RealClock:
    """``time.perf_counter`` and ``time.sleep``: the clock the streams stamp their calls with."""

    def now(self) -> float:
        return time.perf_counter()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


@dataclass(frozen=True)
class Harness:
    window_s: float = 0.5  # PipelineParams.benchmark_window_s's default
    warmup_s: float = 0.5
    stable_windows: int = 3  # consecutive windows that must agree
    stable_spread: float = 0.10  # (max - min) / mean of those windows
    max_windows: int = 12
    min_gain: float = 0.05  # a step must add this much throughput over the best so far ...
    patience: int = 2  # ... or the sweep stops after this many such steps in a row (one noisy dip does not end it)
    max_concurrency: int = 16
    load_timeout_s: float = 600.0  # until every stream has made its first call (a Neuron copy loads first)
    race_windows: int = 2  # windows a point runs before it may stop as a clear loser; 0: every point in full
    clock: Clock = field(default_factory=RealClock, compare=False, repr=False)


def harness_for(params: PipelineParams) -> Harness:
    """The harness as the run's params set it, for the baseline and every config alike.

    Points race the best so far only where the most samples/s is picked: under a latency budget a slower
    point can be the pick, so each is measured in full."""
    race = Harness.race_windows if params.selection == "max_throughput" else 0
    return Harness(window_s=params.benchmark_window_s, max_concurrency=params.max_concurrency, race_windows=race)


def machine_context() -> MachineContext:
    """This worker's CPU, cores and measured matmul peak (measured once per host, kept under the home)."""
    return machine.context(settings_module.load().home / "machine")


def _spread(rates: list[float]) -> float:
    """(max - min) / mean of window throughputs; 0 where nothing ran."""
    mean = float(np.mean(rates))
    return (max(rates) - min(rates)) / mean if mean > 0 else 0.0


class ThreadStreams:
    """Streams as threads of this process, each calling its own predictor."""

    def __init__(self, predictors: list[Predict], batch: dict[str, np.ndarray]):
        self.predictors, self.batch = predictors, batch
        self.copies, self.visible_cores = 1, []
        # (when it ended, its latency) of every finished call, in finishing order; list.append is atomic, and a
        # window's calls are the slice between the list's lengths at its start and end (no scan while streams run)
        self.calls: list[tuple[float, float]] = []
        self.errors: list[BaseException] = []
        self.running = 0  # streams that finished one call
        self._count = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._stream, args=(p,), daemon=True) for p in predictors]

    def __len__(self) -> int:
        return len(self.predictors)

    def _stream(self, predict: Predict) -> None:
        first = True
        try:
            while not self._stop.is_set():
                t0 = time.perf_counter()
                predict(self.batch)
                t1 = time.perf_counter()
                self.calls.append((t1, t1 - t0))
                if first:
                    first = False
                    with self._count:
                        self.running += 1
        except BaseException as exc:  # noqa: BLE001 - reported by the caller, e.g. out of memory
            self.errors.append(exc)
            self._stop.set()

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


class QueueStreams:
    """Requests in flight through the runtime's own queue: one thread starts a request whenever one is free, as
    ``benchmark_app`` does, and the runtime's callback records each as it finishes."""

    def __init__(self, requests: RequestQueue, batch: dict[str, np.ndarray]):
        self.requests, self.batch = requests, batch
        self.copies, self.visible_cores = 1, []
        self.calls: list[tuple[float, float]] = []  # as ThreadStreams's
        self.errors: list[BaseException] = []
        self.running = 0  # requests finished, up to one per slot: every slot has run once
        self._count = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drive, daemon=True)

    def __len__(self) -> int:
        return self.requests.size

    def _finished(self, seconds: float) -> None:
        self.calls.append((time.perf_counter(), seconds))
        if self.running < len(self):
            with self._count:
                self.running = min(self.running + 1, len(self))

    def _drive(self) -> None:
        try:
            while not self._stop.is_set():
                self.requests.submit(self.batch, self._finished)
            self.requests.wait()
        except BaseException as exc:  # noqa: BLE001 - reported by the caller, e.g. out of memory
            self.errors.append(exc)
            self._stop.set()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _copy_process(artifact_json: str, batch_file: str, env: str, cores: str, streams: int, queue, stop) -> None:
    """One model copy in its own process, seeing only ``cores`` (set before its runtime starts)."""
    os.environ[env] = cores
    try:
        with np.load(batch_file) as arrays:
            batch = {name: arrays[name] for name in arrays.files}
        artifact = CompiledArtifact.model_validate_json(artifact_json)
        predict = targets.get(artifact.config.target).load(artifact, len(next(iter(batch.values()))))
        queue.put(("ready", os.environ.get(env, "")))

        def stream() -> None:
            first = True
            while not stop.is_set():
                t0 = time.perf_counter()
                predict(batch)
                queue.put(("call", time.perf_counter() - t0, first))
                first = False

        threads = [threading.Thread(target=stream, daemon=True) for _ in range(streams)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    except BaseException as exc:  # noqa: BLE001 - goes to the parent, which names the copy
        queue.put(("error", f"copy on cores {cores}: {type(exc).__name__}: {exc}"[:500]))


class CopyProcesses:
    """Model copies as processes, each pinned to its own device cores through ``env`` (Neuron's
    NEURON_RT_VISIBLE_CORES) with ``streams_per_copy`` threads sharing the copy: NeuronPerf's
    n_models x workers_per_model, with a process per copy so the GIL does not serialise them."""

    def __init__(
        self,
        artifact: CompiledArtifact,
        batch: dict[str, np.ndarray],
        env: str,
        groups: list[str],
        streams_per_copy: int,
    ):
        context = multiprocessing.get_context("spawn")  # a fresh runtime per copy; fork would copy this one's
        self.copies, self.streams_per_copy = len(groups), streams_per_copy
        self.visible_cores: list[str] = []
        self.calls: list[tuple[float, float]] = []  # as ThreadStreams's, ended when the parent hears of it
        self.errors: list[BaseException] = []
        self.running = 0
        self._queue, self._stop = context.Queue(), context.Event()
        # The batch goes through a file: pickled into the spawn pipe, a batch larger than the pipe's buffer
        # would block the parent for good if a copy died before reading it.
        with tempfile.NamedTemporaryFile(prefix="copy-batch-", suffix=".npz", delete=False) as handle:
            np.savez(handle, **batch)
        self._batch_file = handle.name
        self._processes = [
            context.Process(
                target=_copy_process,
                args=(
                    artifact.model_dump_json(),
                    self._batch_file,
                    env,
                    cores,
                    streams_per_copy,
                    self._queue,
                    self._stop,
                ),
                daemon=True,
            )
            for cores in groups
        ]
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._done = threading.Event()

    def __len__(self) -> int:
        return self.copies * self.streams_per_copy

    def _read(self) -> None:
        while not self._done.is_set():
            try:
                message = self._queue.get(timeout=0.1)
            except queue_module.Empty:
                dead = [p for p in self._processes if p.exitcode not in (None, 0)]
                if dead and not self._stop.is_set():
                    self.errors.append(RuntimeError(f"a model copy exited with code {dead[0].exitcode}"))
                continue
            if message[0] == "call":
                self.calls.append((time.perf_counter(), message[1]))
                self.running += message[2]
            elif message[0] == "ready":
                self.visible_cores.append(message[1])
            else:
                self.errors.append(RuntimeError(message[1]))

    def start(self) -> None:
        for process in self._processes:
            process.start()
        self._reader.start()

    def stop(self) -> None:
        self._stop.set()
        for process in self._processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
        self._done.set()
        self._reader.join()
        Path(self._batch_file).unlink(missing_ok=True)


Streams = ThreadStreams | QueueStreams | CopyProcesses


def measure(
    predictors: list[Predict],
    batch: dict[str, np.ndarray],
    batch_size: int,
    harness: Harness,
    device: str = "CPU",
    to_beat: float | None = None,
) -> BenchmarkPoint:
    """One point: ``len(predictors)`` threads calling predict on ``batch`` until the windows settle."""
    return measure_streams(ThreadStreams(predictors, batch), batch_size, harness, device, to_beat)


def _clear_loss(windows: list[tuple[int, int, float]], harness: Harness, to_beat: float | None) -> bool:
    """Whether the last ``race_windows`` windows are all beyond the noise under ``to_beat`` (the best so far)."""
    if not to_beat or not harness.race_windows or len(windows) < harness.race_windows:
        return False
    return max(w[2] for w in windows[-harness.race_windows :]) < to_beat * (1 - harness.stable_spread)


POLL_S = 0.005  # how often a window looks for its end


def _window_end(streams: Streams, first: int, boundary: float, harness: Harness) -> tuple[int, float]:
    """Wait for the window that started at ``boundary`` with call ``first`` to end: at a call's end, once it has
    lasted ``window_s`` and held a call per stream. (the end call's index, when the window's last call ended)"""
    calls, errors, clock = streams.calls, streams.errors, harness.clock
    while True:
        clock.sleep(POLL_S)
        if errors:
            raise errors[0]
        end = len(calls)
        # the clock first (cheap); the scan of the window's calls only once it can end
        if end - first >= len(streams) and clock.now() - boundary >= harness.window_s:
            ended = max(when for when, _ in calls[first:end])  # threads may append a hair out of order
            if ended - boundary >= harness.window_s:
                return end, ended
        if clock.now() - boundary > harness.load_timeout_s:
            raise TimeoutError(f"no call ended in {harness.load_timeout_s} s")


def measure_streams(
    streams: Streams, batch_size: int, harness: Harness, device: str = "CPU", to_beat: float | None = None
) -> BenchmarkPoint:
    """One point: ``streams`` running until the windows settle, or until it is clearly under ``to_beat`` (see the
    module's docstring)."""
    calls, errors, clock = streams.calls, streams.errors, harness.clock
    started = clock.now()
    streams.start()
    probe = probe_for(device)
    try:
        # warm-up: every stream has finished one call (a copy has loaded), then warmup_s more
        while not errors and streams.running < len(streams):
            if clock.now() - started > harness.load_timeout_s:
                raise TimeoutError(
                    f"{len(streams) - streams.running} streams made no call in {harness.load_timeout_s} s"
                )
            clock.sleep(0.01)
        warm = clock.now()
        while not errors and clock.now() - warm < harness.warmup_s:
            clock.sleep(0.01)
        if errors:
            raise errors[0]
        windows: list[tuple[int, int, float]] = []  # (first call, end call, throughput)
        samples: list[list[float]] = []
        stable = stopped_early = False
        first = len(calls)
        boundary = calls[first - 1][0]  # the window starts where the last call before it ended
        probe.start()
        while len(windows) < harness.max_windows:
            end, ended = _window_end(streams, first, boundary, harness)
            windows.append((first, end, (end - first) * batch_size / (ended - boundary)))
            samples.append(probe.sample())
            boundary, first = ended, end
            last = [w[2] for w in windows[-harness.stable_windows :]]
            if len(last) == harness.stable_windows and min(last) > 0 and _spread(last) <= harness.stable_spread:
                stable = True
                break
            if _clear_loss(windows, harness, to_beat):
                stopped_early = True
                break
    finally:
        streams.stop()
        probe.stop()
    final = windows[-(harness.race_windows if stopped_early else harness.stable_windows) :]
    in_final = [latency for _, latency in calls[final[0][0] : final[-1][1]]]
    rates = [w[2] for w in final]
    ms = np.array(in_final) * 1000
    utilisation = np.mean(samples[-len(final) :], axis=0).tolist() if samples and samples[0] else []
    return BenchmarkPoint(
        batch_size=batch_size,
        concurrency=len(streams),
        copies=streams.copies,
        throughput=round(float(np.mean(rates)), 2),
        latency_ms_p50=round(float(np.percentile(ms, 50)), 3),
        latency_ms_p90=round(float(np.percentile(ms, 90)), 3),
        latency_ms_p99=round(float(np.percentile(ms, 99)), 3),
        iterations=len(in_final),
        windows=len(windows),
        spread=round(_spread(rates), 4),
        # a point stopped as a clear loser is as stable as its windows say
        stable=stable or (stopped_early and _spread(rates) <= harness.stable_spread),
        stopped_early=stopped_early,
        device=probe.device,
        utilisation=[round(u, 1) for u in utilisation],
        visible_cores=sorted(streams.visible_cores),
    )


class Sweep:
    """Measures points of one subject, keeping one predictor per (batch size, stream) for reuse."""

    def __init__(
        self,
        loader: Loader,
        inputs: dict[str, np.ndarray],
        harness: Harness,
        device: str = "CPU",
        stream_loader: StreamLoader | None = None,
    ):
        self.loader, self.inputs, self.harness, self.device = loader, inputs, harness, device
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
) -> BenchmarkResult:
    inputs = _inputs(dataset_ref, max(batch_sizes), sequence_length)
    sweep = Sweep(loader, inputs, harness, device, stream_loader)
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
    artifact: CompiledArtifact, dataset_ref: DatasetRef, batch_sizes: list[int], harness: Harness | None = None
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
        )
    except Exception as exc:
        return BenchmarkResult(subject=config.key, status=Status.FAILED, reason=f"{type(exc).__name__}: {exc}")


@_timed
def benchmark_baseline(
    exported: ExportedModel, dataset_ref: DatasetRef, batch_sizes: list[int], harness: Harness | None = None
) -> BenchmarkResult:
    """The source framework itself, with its own threading, measured by the same harness."""
    predict = load_reference(exported)
    return run_sweep("baseline", lambda _batch_size: predict, dataset_ref, batch_sizes, harness or Harness())
