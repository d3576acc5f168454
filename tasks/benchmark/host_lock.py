"""One sweep at a time per host: two benchmarks on one machine measure each other, and so does a validation
running beside a sweep.

A lock file in this host's own directory (``<home>/locks``), taken with ``flock``: a sweep (a config's or the CPU
baseline's) holds it alone, validations share it. It is per host, not per DAG: an N-host fleet sweeps N configs at
once, and two runs on one host take turns. The kernel drops a lock whose holder dies, so a lost task never leaves
its host locked.
"""

from __future__ import annotations

import contextlib
import fcntl
import time
from collections.abc import Iterator

from tasks.core import settings as settings_module

LOCK_FILE = "benchmark.lock"


@contextlib.contextmanager
def _held(mode: int) -> Iterator[float]:
    directory = settings_module.load().locks_dir
    directory.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(directory / LOCK_FILE, "a+") as handle:
        fcntl.flock(handle, mode)
        try:
            yield time.monotonic() - started
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def sweep() -> contextlib.AbstractContextManager[float]:
    """Hold this host alone for a benchmark sweep; yields the seconds waited for it."""
    return _held(fcntl.LOCK_EX)


def beside_others() -> contextlib.AbstractContextManager[float]:
    """Work that may run beside other such work but never beside a sweep (validation); yields seconds waited."""
    return _held(fcntl.LOCK_SH)
