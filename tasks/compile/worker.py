"""Child-process entry point of the compile stage: ``python -m tasks.compile.worker request.json``.

Runs one target's compiler and writes ``{"report", "peak_rss_bytes"}`` or
``{"error", "out_of_memory"}`` to the result file the request names.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

from tasks import targets
from tasks.core.files import write_json
from tasks.core.records import CompileConfig, ExportedModel
from tasks.datasets import calibration as calibration_file
from tasks.targets.base import CompileError

# The parent enforces the memory limit on resident memory; this address-space cap is only a
# backstop against a spike between its polls. Runtimes reserve far more address space than they
# touch, so the cap is a multiple of the limit.
ADDRESS_SPACE_FACTOR = 4


def _peak_rss_bytes() -> int:
    """This process's resident high-water mark, or its subprocesses' if higher (gcc, neuron-cc).

    Not RUSAGE_SELF: Linux carries the parent's high-water mark across fork/exec into it, so it
    would report the Airflow worker's memory as the compiler's. VmHWM belongs to this image only.
    """
    with open("/proc/self/status") as status:
        own_kib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    # Children's maxrss can carry this process's mark the same way, which is <= own: max() stays right.
    children_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own_kib, children_kib) * 1024


PARENT_PID_ENV = "COMPILE_PIPELINE_COMPILE_PARENT"


def _stop_when_orphaned(parent_pid: int, poll_s: float = 1.0) -> None:
    """Kill this process group (the compiler and its gcc/neuron-cc children) once the task that started it is gone.

    It runs in a session of its own, so losing the Airflow worker (SIGKILL, a lost machine) would
    otherwise leave it compiling for nobody until its time limit.
    """

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(poll_s)
        os.killpg(os.getpgrp(), signal.SIGKILL)

    threading.Thread(target=watch, name="orphan-watch", daemon=True).start()


def main(request_path: str) -> int:
    if os.environ.get(PARENT_PID_ENV):
        _stop_when_orphaned(int(os.environ[PARENT_PID_ENV]))
    request = json.loads(Path(request_path).read_text())
    if request.get("memory_mb"):
        # Set here rather than in a preexec_fn, which is unsafe in a threaded parent (the Airflow worker).
        cap = int(request["memory_mb"]) * ADDRESS_SPACE_FACTOR * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    exported = ExportedModel.model_validate(request["exported"])
    config = CompileConfig.model_validate(request["config"])
    try:
        target = targets.get(config.target)
        ok, why = target.available()
        if not ok:
            raise CompileError(f"target {config.target} is not available here: {why}")
        calibration = calibration_file.load(request["calibration"]) if request.get("calibration") else None
        report = target.compile(exported, config, Path(request["out_dir"]), calibration)
    except MemoryError as exc:
        traceback.print_exc()
        write_json(request["result"], {"error": f"MemoryError {exc}".strip(), "out_of_memory": True})
        return 1
    except Exception as exc:
        traceback.print_exc()
        first_line = (str(exc).strip().splitlines() or [""])[0][:500]  # the full traceback is in the compile log
        write_json(
            request["result"], {"error": f"{type(exc).__name__}: {first_line}", "peak_rss_bytes": _peak_rss_bytes()}
        )
        return 1
    write_json(request["result"], {"report": report.to_json(), "peak_rss_bytes": _peak_rss_bytes()})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
