"""Compile stage: one config, compiled in a child process with a time limit and a memory limit.

A compiler that crashes, hangs or eats the machine fails its own config only. The
artifact is built in a scratch directory and renamed into place when complete,
so a half-written artifact is never visible.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from tasks.files import local_path, to_uri, tree_files, tree_sha256
from tasks.records import CompileConfig, CompiledArtifact, ExportedModel
from tasks.settings import PROJECT_ROOT

DEFAULT_TIMEOUT_S = 1800
DEFAULT_MEMORY_MB = 16 * 1024


def compile_config(
    exported: ExportedModel,
    config: CompileConfig,
    out_root: str | Path,
    timeout_s: int = DEFAULT_TIMEOUT_S,
    memory_mb: int = DEFAULT_MEMORY_MB,
) -> CompiledArtifact:
    """Compile ``config``; a failure is returned as a ``failed`` artifact with its reason, not raised."""
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
    request_path.write_text(
        json.dumps(
            {
                "exported": exported.to_json(),
                "config": config.to_json(),
                "out_dir": str(scratch),
                "result": str(result_path),
                "memory_mb": memory_mb,
            }
        )
    )

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])))
    started = time.monotonic()
    with open(log_path, "wb") as log:
        child = subprocess.Popen(
            [sys.executable, "-m", "tasks.compile_worker", str(request_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # so a timeout kills the compiler's own children too
        )
        try:
            returncode = child.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            returncode = None
    seconds = time.monotonic() - started

    def failed(reason: str) -> CompiledArtifact:
        shutil.rmtree(scratch, ignore_errors=True)
        return CompiledArtifact(
            config=config, status="failed", reason=reason, compile_seconds=round(seconds, 3), log_uri=to_uri(log_path)
        )

    if returncode is None:
        return failed(f"compile timed out after {timeout_s} s")
    result = json.loads(result_path.read_text()) if result_path.exists() else {}
    if returncode != 0 or "error" in result:
        if "error" in result:
            return failed(result["error"])
        if returncode < 0:
            name = signal.Signals(-returncode).name
            return failed(f"compiler process killed by {name} (memory limit {memory_mb} MiB?)")
        return failed(f"compiler process exited with code {returncode}; see {log_path}")
    if not tree_files(scratch):
        return failed("compiler wrote no files")
    scratch.rename(final_dir)
    return CompiledArtifact(
        config=config,
        status="ok",
        uri=to_uri(final_dir),
        sha256=tree_sha256(final_dir),
        files=tree_files(final_dir),
        compiler=result["compiler"],
        compiler_version=result["compiler_version"],
        compile_seconds=round(seconds, 3),
        log_uri=to_uri(log_path),
    )


def verify(artifact: CompiledArtifact) -> Path:
    """The artifact's directory, after checking that its files are exactly what was compiled."""
    path = local_path(artifact.uri)
    if artifact.status != "ok":
        raise ValueError(f"config {artifact.config.key} did not compile: {artifact.reason}")
    if not path.is_dir() or tree_sha256(path) != artifact.sha256:
        raise ValueError(f"compiled artifact {path} is missing or changed since compile (sha256 mismatch)")
    return path
