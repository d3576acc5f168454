"""Child-process entry point of the compile stage: ``python -m tasks.compile_worker request.json``.

Runs one target's compiler and writes ``{"compiler", "compiler_version"}`` or
``{"error"}`` to the result file the request names.
"""

from __future__ import annotations

import json
import resource
import sys
import traceback
from pathlib import Path

from tasks import dataset, targets
from tasks.files import write_json
from tasks.records import CompileConfig, ExportedModel

NEEDS_CALIBRATION = {"int8"}


def main(request_path: str) -> int:
    request = json.loads(Path(request_path).read_text())
    if request.get("memory_mb"):
        # Set here rather than in a preexec_fn, which is unsafe in a threaded parent (the Airflow worker).
        limit = int(request["memory_mb"]) * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    exported = ExportedModel.model_validate(request["exported"])
    config = CompileConfig.model_validate(request["config"])
    try:
        target = targets.get(config.target)
        ok, why = target.available()
        if not ok:
            raise targets.CompileError(f"target {config.target} is not available here: {why}")
        calibration = dataset.calibration_inputs() if config.precision in NEEDS_CALIBRATION else None
        compiler, version = target.compile(exported, config, Path(request["out_dir"]), calibration)
    except Exception as exc:
        traceback.print_exc()
        write_json(request["result"], {"error": f"{type(exc).__name__}: {exc}"})
        return 1
    write_json(request["result"], {"compiler": compiler, "compiler_version": version})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
