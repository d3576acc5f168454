"""``make demo``: start the local services, run ``compile_pipeline`` through ``airflow dags test``, print the summary.

Airflow's own log of the run goes to ``<home>/demo/airflow-dags-test.log``; the
console shows one progress line per finished step, then the summary, and last
``report: <path>``. The services stay up afterwards (``make stop`` ends them).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from devtools import services
from tasks.core import settings as settings_module
from tasks.core import store
from tasks.core.files import local_path
from tasks.core.settings import PROJECT_ROOT, Settings
from tasks.registry.review import approve
from tasks.report.publish import LATEST, summary
from tasks.report.records import RunReport
from tasks.stages.runner import PROGRESS_MARK


def airflow_env(settings: Settings, home: Path | None = None) -> dict[str, str]:
    """Environment for the Airflow CLI: SQLite metadata in ``home`` (default: the project's working directory)."""
    home = home or settings.home / "airflow"
    return {
        **os.environ,
        **services.local_env(settings),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])),
    }


def airflow(
    args: list[str],
    settings: Settings,
    log_path: Path,
    echo_progress: bool = False,
    home: Path | None = None,
    env: dict[str, str] | None = None,
) -> int:
    """Run the Airflow CLI, all output to ``log_path``; echo the pipeline's progress lines if asked. ``env``: the
    whole environment, instead of the demo's (``make cluster`` has its own metadata database)."""
    command = [str(Path(sys.executable).parent / "airflow"), *args]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as log:
        process = subprocess.Popen(
            command, env=env or airflow_env(settings, home), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for line in process.stdout:
            log.write(line)
            if echo_progress and PROGRESS_MARK in line:
                text = line[line.index(PROGRESS_MARK) + len(PROGRESS_MARK) :].strip()
                # Airflow wraps task output in a structured log line: keep only the message.
                print("  " + text.split("  [", 1)[0].split(" [task.stdout]", 1)[0].rstrip(), flush=True)
        return process.wait()


COMPILER_SLOTS_POOL = "compiler_slots"


_READY: set[str] = set()  # the metadata databases this process has migrated: once each (two CLI calls, seconds)


def ensure_airflow_db(
    settings: Settings, log_path: Path, home: Path | None = None, env: dict[str, str] | None = None
) -> None:
    """Migrate the metadata DB and create the pool compile tasks run in (COMPILER_SLOTS, default 2)."""
    database = (env or airflow_env(settings, home))["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    if database in _READY:
        return
    if airflow(["db", "migrate"], settings, log_path, home=home, env=env) != 0:
        raise SystemExit(f"airflow db migrate failed; see {log_path}")
    slots = os.environ.get("COMPILER_SLOTS", "2")
    description = "compile tasks at once (each a compiler child process with its memory limit)"
    pool = ["pools", "set", COMPILER_SLOTS_POOL, slots, description]
    if airflow(pool, settings, log_path, home=home, env=env) != 0:
        raise SystemExit(f"airflow pools set {COMPILER_SLOTS_POOL} failed; see {log_path}")
    _READY.add(database)


# What the demo sweeps: enough to show each step's answer in minutes. The full grid (every batch size, up to 16
# streams, longer windows, TorchInductor) is what `make bench` measures.
DEMO_SWEEP = {"batch_sizes": [1, 8], "max_concurrency": 2, "benchmark_window_s": 0.3}
# and what int8 calibrates on: NNCF's default subset is 300 samples; a third of it quantises these models in half
# the time, and the gate still judges the result on the validation samples
DEMO_INT8 = {"calibration_samples": 128}

# The main job on the built-in example (the targets that cannot run here are listed with their reason), then the
# Keras path: a model trained in the pipeline, judged against TensorFlow itself; then a Hugging Face
# sentence-embedding model, judged by closeness and neighbour recall. Then one promote_model run serves all three.
DEMO_RUNS = [
    (
        "MobileNetV2 (PyTorch, ImageNet weights)",
        {"targets": ["onnxruntime", "openvino", "neuron-inf1", "neuron-inf2", "tensorrt"], **DEMO_SWEEP, **DEMO_INT8},
    ),
    (
        "a Keras digits classifier (TensorFlow SavedModel)",
        {
            "model_name": "keras-digits",
            "model_uri": "builtin:keras_digits",
            "framework": "tensorflow",
            "dataset": "builtin:digits",
            "targets": ["onnxruntime", "openvino", "neuron-inf1"],
            **DEMO_SWEEP,
        },
    ),
    (
        "all-MiniLM-L6-v2 (a Hugging Face directory: sentence embeddings, no labels)",
        {
            "model_name": "all-minilm-l6-v2",
            "model_uri": "builtin:all_minilm_l6_v2",
            "framework": "huggingface",
            "dataset": "builtin:sentences",
            "targets": ["openvino", "neuron-inf2"],
            **DEMO_SWEEP,
            **DEMO_INT8,
        },
    ),
]


def latest_report(settings: Settings) -> str | None:
    """The URI of the newest run report in the run store (None before the first)."""
    uri = store.read_bytes(store.join(settings.run_store_uri, LATEST))
    return uri.decode() if uri else None


def shown_path(uri: str) -> str:
    """A report's path where it is on this machine's disk, else its URI (s3://...)."""
    return str(local_path(uri)) if uri.startswith("file:") else uri


def run_pipeline(settings: Settings, conf: dict | None = None) -> tuple[int, str | None]:
    """Run one ``compile_pipeline`` DAG run in-process; return the exit code and where its report.json is (a path
    on this machine for a file:// run store, else its s3:// URI)."""
    log_path = settings.home / "demo" / "airflow-dags-test.log"
    ensure_airflow_db(settings, log_path)
    before = latest_report(settings)
    args = ["dags", "test", "compile_pipeline"]
    if conf:
        args += ["-c", json.dumps(conf)]
    code = airflow(args, settings, log_path, echo_progress=True)
    after = latest_report(settings)
    return code, shown_path(after) if after and after != before else None


def approve_and_promote(settings: Settings, *reports: RunReport) -> int:
    """Do what a reviewer does in the MLflow UI for each run's registered version (copy it into <model>.approved,
    alias champion there), then run promote_model once: for one model by name, else as its schedule does (every
    approved champion not yet promoted)."""
    for report in reports:
        model, version = report.mlflow.registered_model, report.mlflow.version
        copy = approve(settings, model, version)
        print(f"== review: {model} version {version} copied to {copy.name} version {copy.version}, alias champion "
              "(what a reviewer does in the MLflow UI)")  # fmt: skip
    print("== running promote_model with airflow dags test")
    log_path = settings.home / "demo" / "airflow-dags-test.log"
    conf = {"model_name": reports[0].mlflow.registered_model} if len(reports) == 1 else {}
    return airflow(["dags", "test", "promote_model", "-c", json.dumps(conf)], settings, log_path, echo_progress=True)


def main() -> int:
    settings = settings_module.load()
    started = time.monotonic()
    print("== starting local services (S3 endpoint, MLflow tracking server)")
    try:
        services.start(settings, log=lambda m: print("  " + m))
    except services.ServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    runs = [json.loads(os.environ["DEMO_CONF"])] if os.environ.get("DEMO_CONF") else DEMO_RUNS
    worst, registered = 0, []
    for title, conf in runs if isinstance(runs[0], tuple) else [("your DEMO_CONF", runs[0])]:
        print(f"== running compile_pipeline for {title} with airflow dags test (Airflow's log: "
              f"{settings.home / 'demo' / 'airflow-dags-test.log'})")  # fmt: skip
        run_started = time.monotonic()
        code, report_uri = run_pipeline(settings, conf)
        if report_uri is None:
            print(
                f"error: the DAG run wrote no report (exit code {code}); see {settings.home / 'demo'}", file=sys.stderr
            )
            return code or 1
        print(f"== done in {time.monotonic() - run_started:.0f} s\n")
        report_data = RunReport.model_validate(store.read_json(report_uri))
        print(summary(report_data, report_uri) + "\n")
        if code == 0 and report_data.mlflow.version:
            registered.append(report_data)
        worst = worst or code
    if registered:
        promote_started = time.monotonic()
        code = approve_and_promote(settings, *registered)
        print(f"== promote_model {'done' if code == 0 else 'FAILED'} in {time.monotonic() - promote_started:.0f} s\n")
        worst = worst or code
    print(f"== demo finished in {time.monotonic() - started:.0f} s")
    return worst


if __name__ == "__main__":
    sys.exit(main())
