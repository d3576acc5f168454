"""The windows of one point: its settings (``Harness``), and how long it runs and what it reports.

Warm-up is excluded; then windows are measured until the last three agree within 10 % (up to a
limit: a point that never settles is reported ``stable=False``, not hidden). A window lasts at least
``window_s`` and holds at least one call per stream, and runs from one call's end to another's:
its throughput is the samples of the calls that ended in it over the time between those ends.
Counting the calls that end in a fixed time instead is off by up to a call either way, so a slow
call needed a window of several calls (and several streams of slow calls a window of several
calls each) before three windows could agree.
Throughput and latency percentiles come from those last three windows, and device
utilisation is sampled over them.

Where the most samples/s is what is picked, a point races the sweep's best so far: once its
first two windows are both more than the stable spread (10 %) under that best, it cannot
become the best, and it stops there (``stopped_early``) instead of waiting for three windows
to agree, which on a noisy machine a losing point (too many streams fighting for the cores)
takes longest to do. The best point itself is always measured in full.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from tasks.benchmark.streams import Streams, ThreadStreams
from tasks.benchmark.utilisation import probe_for
from tasks.core.batching import Predict
from tasks.core.results import BenchmarkPoint


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


def _spread(rates: list[float]) -> float:
    """(max - min) / mean of window throughputs; 0 where nothing ran."""
    mean = float(np.mean(rates))
    return (max(rates) - min(rates)) / mean if mean > 0 else 0.0


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
