"""The benchmark harness on simulated devices timed by a simulated clock (no sleeping: nothing a loaded machine does
moves these figures): windows that settle or never do, the sweeps and where they stop, racing; and on real threads,
the stream drivers themselves."""

import threading
import time
from collections.abc import Callable

import numpy as np

from tasks.benchmark.sweep import Sweep
from tasks.benchmark.windows import Harness, measure, measure_streams


class SimulatedClock:
    """The harness's clock in simulated time: a sleep moves time on and lets the simulated streams run up to it."""

    def __init__(self):
        self.t = 1000.0
        self.listeners: list[Callable[[float], None]] = []

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds
        for advance in list(self.listeners):
            advance(self.t)


class SimulatedStreams:
    """``n`` streams calling a simulated device, each call taking ``latency(start)`` seconds; ``serial``: the device
    runs one call at a time, and a call's latency includes its wait for the device (as a lock would)."""

    def __init__(self, clock: SimulatedClock, n: int, latency: Callable[[float], float], serial: bool = False):
        self.clock, self.n, self.latency, self.serial = clock, n, latency, serial
        self.copies, self.visible_cores = 1, []
        self.calls: list[tuple[float, float]] = []
        self.errors: list[BaseException] = []
        self.running = 0  # streams that finished one call
        self._ends: dict[int, float] = {}  # stream -> when its call in flight ends
        self._ready: list[float] = []  # stream -> when it made its last call (its next call's start)
        self._made = [0] * n
        self._device_free = 0.0

    def __len__(self) -> int:
        return self.n

    def start(self) -> None:
        self._ready = [self.clock.now()] * self.n
        self._device_free = self.clock.now()
        self.clock.listeners.append(self.advance)

    def stop(self) -> None:
        self.clock.listeners.remove(self.advance)

    def advance(self, now: float) -> None:
        """Every call that has ended by ``now``, in the order they end."""
        while True:
            for stream in range(self.n):
                if stream not in self._ends:
                    begin = max(self._ready[stream], self._device_free) if self.serial else self._ready[stream]
                    self._ends[stream] = begin + self.latency(begin)
                    if self.serial:
                        self._device_free = self._ends[stream]
            stream, end = min(self._ends.items(), key=lambda item: item[1])
            if end > now:
                return
            del self._ends[stream]
            self.calls.append((end, end - self._ready[stream]))
            self._ready[stream] = end
            self._made[stream] += 1
            self.running += self._made[stream] == 1


def fast() -> Harness:
    """Short windows on a fresh simulated clock."""
    return Harness(window_s=0.1, warmup_s=0.05, max_windows=8, clock=SimulatedClock())


def on_device(harness: Harness, streams: int, latency: Callable[[float], float], serial: bool = False):
    return SimulatedStreams(harness.clock, streams, latency, serial)


class SimulatedSweep(Sweep):
    """A sweep whose points run on a simulated device: ``seconds(batch_size)`` a call, one call at a time; a
    ``MemoryError`` from it is a batch that does not fit."""

    def __init__(self, seconds: Callable[[int], float], harness: Harness, largest: int = 256):
        super().__init__(lambda batch_size: None, {"x": np.zeros((largest, 3))}, harness)
        self.seconds = seconds

    def streams(self, batch_size: int, concurrency: int):
        seconds = self.seconds(batch_size)
        return on_device(self.harness, concurrency, lambda start: seconds, serial=True)


def test_measure_reports_throughput_latency_percentiles_and_settles():
    harness = fast()
    point = measure_streams(on_device(harness, 1, lambda start: 0.01), 4, harness)
    assert point.stable and point.windows == 3 and point.spread == 0
    assert point.latency_ms_p50 == point.latency_ms_p99 == 10.0
    # three windows of at least 0.1 s (each ends at the first call's end once the harness looks past 0.1 s)
    assert point.throughput == 400.0 and 30 <= point.iterations <= 33
    assert point.device == "CPU" and len(point.utilisation) >= 1  # per-core utilisation over the windows


def test_a_point_that_never_settles_is_reported_unstable():
    harness = fast()

    def noisy(start):  # a neighbour that takes the machine every other 0.2 s: windows never agree
        return 0.02 if int(start / 0.2) % 2 else 0.002

    point = measure_streams(on_device(harness, 1, noisy), 1, harness)
    assert not point.stable and point.windows == harness.max_windows and point.spread > 0.10


RATES = {1: 100, 2: 180, 4: 320, 8: 560, 16: 800, 32: 810, 64: 800, 128: 805, 256: 800}  # saturates at batch 16


def test_sweep_doubles_batch_until_gains_fall_under_5_percent_twice_then_tries_streams():
    sweep = SimulatedSweep(lambda batch_size: batch_size / RATES[batch_size], fast())
    sweep.adaptive([1, 2, 4, 8, 16, 32, 64, 128, 256])
    single = [p.batch_size for p in sweep.points if p.concurrency == 1]
    # 100, 180, 320, 560, 800 (+43 %), 810 (+1 %), 800 (0 %: second miss, stop)
    assert single == [1, 2, 4, 8, 16, 32, 64]
    assert [p.concurrency for p in sweep.points if p.concurrency > 1] == [2, 4]  # one device: streams do not help
    assert any("batch sweep stopped at batch 64 x 1 streams: 2 steps in a row" in n for n in sweep.notes)
    assert [round(p.throughput) for p in sweep.points if p.concurrency == 1] == [100, 180, 320, 560, 800, 810, 800]


def test_one_noisy_dip_does_not_end_the_sweep():
    rates = {1: 100, 2: 150, 4: 140, 8: 300, 16: 310, 32: 200}  # batch 4 dips (a noisy neighbour)
    harness = Harness(window_s=0.1, warmup_s=0.05, max_concurrency=1, clock=SimulatedClock())
    sweep = SimulatedSweep(lambda batch_size: batch_size / rates[batch_size], harness, largest=32)
    sweep.adaptive([1, 2, 4, 8, 16, 32])
    assert [p.batch_size for p in sweep.points] == [1, 2, 4, 8, 16, 32]
    assert max(sweep.points, key=lambda p: p.throughput).batch_size == 16


def test_a_batch_that_runs_out_of_memory_ends_the_batch_sweep_with_a_note():
    def seconds(batch_size):
        if batch_size >= 4:
            raise MemoryError("cannot allocate 4 GiB")
        return batch_size / RATES[batch_size]

    sweep = SimulatedSweep(seconds, fast(), largest=8)
    sweep.adaptive([1, 2, 4, 8])
    assert [p.batch_size for p in sweep.points if p.concurrency == 1] == [1, 2]
    assert "batch 4 x 1 streams failed: MemoryError: cannot allocate 4 GiB" in sweep.notes


def test_a_point_clearly_under_the_best_so_far_stops_after_two_windows_and_the_best_is_measured_in_full():
    def point(harness, to_beat=None):
        return measure_streams(on_device(harness, 1, lambda start: 0.01), 1, harness, to_beat=to_beat)

    full = point(fast())
    raced = point(fast(), to_beat=full.throughput * 2)
    assert raced.stopped_early and raced.windows == 2 and raced.throughput == full.throughput
    assert "stopped early under the best" in raced.summary
    near = point(fast(), to_beat=full.throughput * 1.02)  # within the noise: measured in full
    assert not near.stopped_early and near.windows == 3
    off = Harness(window_s=0.1, warmup_s=0.05, max_windows=8, race_windows=0, clock=SimulatedClock())
    assert not point(off, to_beat=full.throughput * 2).stopped_early


def test_the_sweep_races_its_losing_points_but_stops_where_it_did_and_picks_the_same_best():
    sweep = SimulatedSweep(lambda batch_size: batch_size / RATES[batch_size], fast())
    sweep.adaptive([1, 2, 4, 8, 16, 32, 64, 128, 256])
    best = max(sweep.points, key=lambda p: p.throughput)
    assert best.batch_size == 32 and not best.stopped_early
    # the rising batch points each beat the best so far; only streams on the one-request device lose clearly
    assert all(not p.stopped_early for p in sweep.points if p.concurrency == 1 and p.batch_size <= 16)
    unraced = SimulatedSweep(lambda batch_size: batch_size / RATES[batch_size], fast())
    unraced.harness = Harness(window_s=0.1, warmup_s=0.05, max_windows=8, race_windows=0, clock=SimulatedClock())
    unraced.adaptive([1, 2, 4, 8, 16, 32, 64, 128, 256])
    assert [(p.batch_size, p.concurrency) for p in unraced.points] == [
        (p.batch_size, p.concurrency) for p in sweep.points
    ]


def test_the_harness_races_only_where_the_most_samples_per_second_is_picked():
    from tasks.benchmark.harness import harness_for
    from tasks.core.params import PipelineParams

    assert harness_for(PipelineParams()).race_windows == 2
    budget = PipelineParams(selection="max_throughput_under_latency", latency_budget_ms=50)
    assert harness_for(budget).race_windows == 0


def test_slow_calls_settle_in_windows_of_a_call_per_stream_timed_between_call_ends():
    """A window runs from one call's end to another's, so windows of one slow call each agree exactly; counting the
    calls in a fixed time would be off by a call either way (a third of a three-call window)."""
    harness = fast()
    point = measure_streams(on_device(harness, 1, lambda start: 0.25), 8, harness)
    assert point.stable and point.windows == 3 and point.iterations == 3 and point.throughput == 8 / 0.25
    harness = fast()
    three = measure_streams(on_device(harness, 3, lambda start: 0.25), 8, harness)
    assert three.stable and three.windows == 3 and three.iterations == 9  # every window holds a call per stream
    assert three.throughput == 3 * 8 / 0.25


def test_streams_on_real_threads_call_their_own_predictors_and_are_measured():
    """The thread driver itself, on the real clock: every stream calls its own predictor, and the point counts
    them (figures on a loaded machine are not asserted)."""
    called = {0: 0, 1: 0}

    def predictor(stream):
        def predict(batch):
            called[stream] += 1
            time.sleep(0.002)
            return batch

        return predict

    point = measure([predictor(0), predictor(1)], {"x": np.zeros(4)}, 4, Harness(window_s=0.05, warmup_s=0.01))
    assert point.concurrency == 2 and point.iterations >= 2 and point.throughput > 0
    assert called[0] > 0 and called[1] > 0


REAL = Harness(window_s=0.1, warmup_s=0.05, max_windows=8)  # on the real clock, for the thread drivers


class Slots:
    """A runtime's own request queue (a RequestQueue): ``size`` requests at 10 ms each, in threads of its own; the
    third request onwards fails where told to (a runtime's error surfaces through its queue)."""

    def __init__(self, size: int, fail_after: int | None = None):
        self.size, self.fail_after, self.started = size, fail_after, 0
        self.free = threading.Semaphore(size)

    def submit(self, inputs, done):
        self.free.acquire()
        self.started += 1
        if self.fail_after is not None and self.started > self.fail_after:
            raise RuntimeError("request failed: out of memory")

        t0 = time.perf_counter()

        def run():
            time.sleep(0.01)
            done(time.perf_counter() - t0)
            self.free.release()

        threading.Thread(target=run, daemon=True).start()

    def wait(self):
        for _ in range(self.size):
            self.free.acquire()
        for _ in range(self.size):
            self.free.release()


def test_a_runtime_queue_is_kept_full_by_one_thread_and_measured_like_streams():
    sweep = Sweep(
        lambda bs: None, {"x": np.zeros((4, 3))}, REAL, stream_loader=lambda bs, n: (Slots(n), {"slots": str(n)})
    )
    one, four = sweep.point(4, 1), sweep.point(4, 4)
    assert one.runtime == {"slots": "1"} and four.concurrency == 4 and four.iterations > 0
    assert four.latency_ms_p50 >= 10  # each request's own time, from its start to its callback
    assert four.throughput > 1.5 * one.throughput  # four requests in flight at once, from one driving thread
    failing = Sweep(lambda bs: None, {"x": np.zeros((4, 3))}, REAL, stream_loader=lambda bs, n: (Slots(n, 2), {}))
    assert failing.point(4, 2) is None and "out of memory" in failing.notes[0]
