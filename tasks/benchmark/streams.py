"""The streams of one point: what makes the calls that the windows (tasks.benchmark.windows) measure.

Each point runs ``concurrency`` streams (threads, each with its own predictor, as a
serving process keeps one runtime instance per worker thread) on one batch; a target whose
runtime serves many requests from one instance (OpenVINO: the THROUGHPUT hint) loads that
instance per point with ``load_streams``, and the point records the settings it ran with; where
that instance queues its requests itself (OpenVINO's ``AsyncInferQueue``), one thread keeps its
queue full instead of a thread per request. A target that pins model copies to device cores
(Neuron) runs each copy in its own process (``CopyProcesses``).
"""

from __future__ import annotations

import multiprocessing
import os
import queue as queue_module
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from tasks import targets
from tasks.core.batching import Predict, RequestQueue
from tasks.core.records import CompiledArtifact


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
