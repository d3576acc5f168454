"""Compile stage: one config, from the compile cache or compiled in a child process with limits.

A compiler that crashes, hangs or eats the machine fails its own config only: the
child runs in its own session, watched for wall time and for the resident memory of
its whole process tree, and is killed (with the tree) when it passes either limit.
The artifact is built in a scratch directory and renamed into place when complete,
so a half-written artifact is never visible.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from tasks import targets
from tasks.compile.cache import CorruptEntry, LocalCache, S3Cache, cache_key, entry_for
from tasks.compile.worker import PARENT_PID_ENV
from tasks.core.files import sha256_file, to_uri, tree_files
from tasks.core.records import CacheStatus, CompileConfig, CompiledArtifact, CompileReport, ExportedModel
from tasks.core.settings import PROJECT_ROOT
from tasks.targets.base import CompileError, Target

DEFAULT_TIMEOUT_S = 1800
DEFAULT_MEMORY_MB = 16 * 1024
NEEDS_CALIBRATION = {"int8"}


def calibration_needed(target: Target, exported: ExportedModel, config: CompileConfig) -> bool:
    """int8 needs calibration inputs, unless the target quantises this model without them (``calibration_free``,
    e.g. ONNX Runtime's dynamic int8)."""
    return config.precision in NEEDS_CALIBRATION and not target.calibration_free(exported, config)


POLL_S = 0.1
# Less free space than this when a compile fails means the disk filled up: the reason says so first.
DISK_HEADROOM_BYTES = 64 * 2**20
KILLED_COMPILER_ATTEMPTS = 2  # a compiler killed from outside is run once more before its config fails


def disk_full(path: Path, error: str = "") -> str:
    """Why a compile writing under ``path`` failed for lack of disk space, or "" where the disk has room."""
    free = shutil.disk_usage(path).free
    if free >= DISK_HEADROOM_BYTES and "No space left on device" not in error:
        return ""
    return (
        f"disk full: {free / 2**20:.0f} MiB left on the file system of {path} while compiling; free space there "
        "or give the compile stage a larger disk (COMPILE_PIPELINE_HOME)"
    )


def _tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants (compilers fork: gcc, neuron-cc, ...)."""

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            pass
    return total


Heartbeat = Callable[[float], None]
HEARTBEAT_S = 20  # how often a long compile says it is still running (``heartbeat``)


def _run_worker(
    request_path: Path, log_path: Path, timeout_s: int, memory_mb: int, heartbeat: Heartbeat | None = None
) -> tuple[int | None, str, int]:
    """Run the compile worker; (return code or None if stopped, why it was stopped, peak tree RSS in bytes).
    ``heartbeat`` is called with the seconds so far every HEARTBEAT_S while it runs."""
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])),
        **{PARENT_PID_ENV: str(os.getpid())},
    )
    limit = memory_mb * 1024 * 1024
    peak, stopped = 0, ""
    started = time.monotonic()
    next_beat = HEARTBEAT_S
    with open(log_path, "ab") as log:
        child = subprocess.Popen(
            [sys.executable, "-m", "tasks.compile.worker", str(request_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own process group, so a kill takes the compiler's children too
        )
        while True:
            try:
                returncode = child.wait(timeout=POLL_S)
                break
            except subprocess.TimeoutExpired:
                pass
            rss = _tree_rss(child.pid)
            peak = max(peak, rss)
            if heartbeat is not None and time.monotonic() - started >= next_beat:
                heartbeat(time.monotonic() - started)
                next_beat += HEARTBEAT_S
            if rss > limit:
                stopped = f"compiler exceeded {memory_mb} MiB (resident {rss / 2**20:.0f} MiB when stopped)"
            elif time.monotonic() - started > timeout_s:
                stopped = f"compile timed out after {timeout_s} s"
            if stopped:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
                return None, stopped, peak
    return returncode, "", peak


def compile_config(
    exported: ExportedModel,
    config: CompileConfig,
    out_root: str | Path,
    timeout_s: int = DEFAULT_TIMEOUT_S,
    memory_mb: int = DEFAULT_MEMORY_MB,
    cache: LocalCache | S3Cache | None = None,
    calibration: str | Path | None = None,
    heartbeat: Heartbeat | None = None,
) -> CompiledArtifact:
    """Compile ``config`` (or take it from ``cache``); a failure is returned as a ``failed`` artifact, not raised.

    ``calibration`` is an .npz of preprocessed inputs keyed by input name, for
    precisions that calibrate (int8); it is never the validation data.
    """
    stage_started = time.monotonic()
    out_root = Path(out_root)
    final_dir = out_root / config.key
    scratch = out_root / f".{config.key}.partial"
    log_path = out_root / f"{config.key}.compile.log"
    request_path = out_root / f".{config.key}.request.json"
    result_path = out_root / f".{config.key}.result.json"
    for stale in (scratch, final_dir):
        shutil.rmtree(stale, ignore_errors=True)
    scratch.mkdir(parents=True)
    result_path.unlink(missing_ok=True)
    log_path.unlink(missing_ok=True)

    def failed(reason: str, seconds: float = 0.0, peak_mb: float = 0.0, key: str = "") -> CompiledArtifact:
        full = disk_full(out_root, reason)  # before the scratch files are removed, which frees their space
        reason = f"{full} ({reason})" if full else reason
        shutil.rmtree(scratch, ignore_errors=True)
        for leftover in (request_path, result_path):
            leftover.unlink(missing_ok=True)
        return CompiledArtifact(
            config=config,
            status="failed",
            reason=reason,
            compile_seconds=round(seconds, 3),
            peak_memory_mb=round(peak_mb, 1),
            stage_seconds=round(time.monotonic() - stage_started, 3),
            cache_key=key,
            log_uri=to_uri(log_path) if log_path.exists() else "",
        )

    def done(
        report: CompileReport, seconds: float, peak_mb: float, status: CacheStatus, key: str, sha256: str
    ) -> CompiledArtifact:
        scratch.rename(final_dir)
        for leftover in (request_path, result_path):
            leftover.unlink(missing_ok=True)
        return CompiledArtifact(
            config=config,
            status="ok",
            uri=to_uri(final_dir),
            sha256=sha256,
            files=tree_files(final_dir),
            compiler=report.compiler,
            compiler_version=report.compiler_version,
            report=report,
            compile_seconds=round(seconds, 3),
            peak_memory_mb=round(peak_mb, 1),
            stage_seconds=round(time.monotonic() - stage_started, 3),
            cache=status,
            cache_key=key,
            log_uri=to_uri(log_path),
        )

    try:
        target = targets.get(config.target)
        fingerprint = target.fingerprint(exported, config)
        needs_calibration = calibration_needed(target, exported, config)
        if needs_calibration and calibration is None:
            raise CompileError(f"{config.key} needs calibration data and none was given")
        key = cache_key(exported, config, fingerprint, sha256_file(calibration) if needs_calibration else "")
    except Exception as exc:  # an unknown target or format fails this config, with its reason
        return failed(f"{type(exc).__name__}: {exc}")

    cache_status: CacheStatus = "off"
    if cache is not None:
        cache_status = "miss"
        try:
            entry = cache.fetch(key, scratch)
        except CorruptEntry as exc:
            with contextlib.suppress(OSError):
                log_path.write_text(f"compile cache: {exc}; compiling again\n")
            entry, cache_status = None, "rebuilt"
            shutil.rmtree(scratch, ignore_errors=True)
            scratch.mkdir(parents=True)
        if entry is not None:
            with contextlib.suppress(OSError):
                log_path.write_text(f"compile cache hit: {cache.uri} key {key}\n")
            return done(
                CompileReport.model_validate(entry["report"]),
                entry["compile_seconds"],
                entry["peak_memory_mb"],
                "hit",
                key,
                entry["tree_sha256"],  # checked against the fetched files by cache.fetch
            )

    request = {
        "exported": exported.to_json(),
        "config": config.to_json(),
        "out_dir": str(scratch),
        "result": str(result_path),
        "memory_mb": memory_mb,
        "calibration": str(calibration) if needs_calibration else None,
    }
    started = time.monotonic()
    try:
        request_path.write_text(json.dumps(request))
        for attempt in range(1, KILLED_COMPILER_ATTEMPTS + 1):
            returncode, stopped, peak = _run_worker(request_path, log_path, timeout_s, memory_mb, heartbeat)
            if stopped or returncode is None or returncode >= 0 or attempt == KILLED_COMPILER_ATTEMPTS:
                break
            # Killed by a signal this stage did not send (the OOM killer, an operator): once more, from scratch.
            with open(log_path, "a") as log:
                log.write(f"compiler process killed by {signal.Signals(-returncode).name}; compiling again\n")
            shutil.rmtree(scratch, ignore_errors=True)
            scratch.mkdir(parents=True)
            result_path.unlink(missing_ok=True)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        return failed(f"{type(exc).__name__}: {exc}", time.monotonic() - started, 0.0, key)
    seconds = time.monotonic() - started
    try:
        result = json.loads(result_path.read_text())
    except (OSError, ValueError):  # none, or cut short (a full disk): the return code and the disk tell why
        result = {}
    peak_mb = max(peak, result.get("peak_rss_bytes", 0)) / 2**20
    if stopped:
        return failed(stopped, seconds, peak_mb, key)
    if peak_mb > memory_mb:
        # The poll can miss a short spike; the child's own high-water mark cannot. Checked before the
        # compiler's own error, which past the limit is often a failed allocation.
        return failed(f"compiler exceeded {memory_mb} MiB (peak resident {peak_mb:.0f} MiB)", seconds, peak_mb, key)
    if "error" in result:
        if result.get("out_of_memory"):
            return failed(f"compiler exceeded {memory_mb} MiB ({result['error']})", seconds, peak_mb, key)
        return failed(result["error"], seconds, peak_mb, key)
    if returncode != 0:
        if returncode < 0:
            name = signal.Signals(-returncode).name
            return failed(f"compiler process killed by {name}; see {log_path}", seconds, peak_mb, key)
        return failed(f"compiler process exited with code {returncode}; see {log_path}", seconds, peak_mb, key)
    if not tree_files(scratch):
        return failed("compiler wrote no files", seconds, peak_mb, key)
    report = CompileReport.model_validate(result["report"])
    entry = entry_for(
        scratch,
        key=key,
        config=config.to_json(),
        report=report.to_json(),
        compile_seconds=round(seconds, 3),
        peak_memory_mb=round(peak_mb, 1),
    )
    if cache is not None:
        try:
            cache.store(key, scratch, entry)
        except Exception as exc:  # a cache that cannot be written costs the next run time, not this run
            with contextlib.suppress(OSError), open(log_path, "a") as log:
                log.write(f"compile cache: could not store {key} in {cache.uri}: {type(exc).__name__}: {exc}\n")
    return done(report, seconds, peak_mb, cache_status, key, entry["tree_sha256"])
