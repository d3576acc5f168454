"""Airflow as a user runs it (`make airflow`: standalone with scheduler and DAG processor): the Asset chain."""

import json
import os
import signal
import subprocess
import sys

import pytest
from conftest import free_port, wait_until

from devtools.airflow_local import pid_file, standalone_env
from devtools.services import stop_group
from tasks.registry.client import client as registry_client
from tasks.registry.review import approve

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.scenario]


def _cli(settings, env, *args: str) -> subprocess.CompletedProcess:
    airflow = os.path.join(os.path.dirname(sys.executable), "airflow")
    return subprocess.run([airflow, *args], env=env, capture_output=True, text=True, timeout=120)


def _wait(what: str, check, timeout_s: float, log):
    return wait_until(what, check, timeout_s, lambda: log.read_text()[-4000:])


def _last_run_state(settings, env, dag_id: str, run_id_prefix: str = "") -> str | None:
    """State of the newest run of ``dag_id`` whose id starts with the prefix (its kind: asset_triggered__, ...)."""
    listed = _cli(settings, env, "dags", "list-runs", dag_id, "-o", "json")
    lines = [line for line in listed.stdout.splitlines() if line.startswith("[")]  # Airflow logs to stdout too
    runs = json.loads(lines[-1]) if listed.returncode == 0 and lines else []
    runs = [run for run in runs if run["run_id"].startswith(run_id_prefix)]  # newest first
    return runs[0]["state"] if runs else None


def test_a_retrain_is_compiled_through_the_asset_and_the_champion_promoted_by_the_schedule(local_services):
    port = free_port()
    # promote polls every minute instead of every 10; retrain runs only when triggered (with its weekly cron, the
    # unpause would start last Monday's retrain at once: a second, full compile beside the one this test waits for)
    schedules = {"PROMOTE_SCHEDULE": "* * * * *", "RETRAIN_SCHEDULE": "none"}
    env = {**os.environ, **schedules}
    log = local_services.home / "airflow" / "standalone-test.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    server = subprocess.Popen([sys.executable, "-m", "devtools.airflow_local", "--port", str(port)], env=env,
                              stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    cli_env = {**standalone_env(local_services, port), **schedules}
    try:
        _wait("Airflow coming up", lambda: "Airflow: http" in log.read_text(), 300, log)
        for dag_id in ("retrain_to_deploy", "compile_pipeline", "promote_model"):
            _wait(f"{dag_id} parsed", lambda d=dag_id: _cli(local_services, cli_env, "dags", "unpause", d).returncode == 0,
                  180, log)  # fmt: skip
        conf = {"model_name": "keras-chain", "compile_params": {"dataset": "builtin:digits",
                "targets": ["onnxruntime"], "precisions": ["fp32"], "batch_sizes": [1, 8],
                "max_concurrency": 2, "benchmark_window_s": 0.3}}  # fmt: skip
        assert (
            _cli(local_services, cli_env, "dags", "trigger", "retrain_to_deploy", "-c", json.dumps(conf)).returncode
            == 0
        )

        # retrain -> model_exported -> compile_pipeline, with nobody triggering it (runs other tests triggered in
        # this Airflow home are manual__ ones)
        def compile_state():
            return _last_run_state(local_services, cli_env, "compile_pipeline", "asset_triggered__")

        state = _wait("compile_pipeline finishing",
                      lambda: compile_state() in ("success", "failed") and compile_state(), 900, log)  # fmt: skip
        assert state == "success"
        client = registry_client(local_services)
        candidate = client.get_model_version_by_alias("keras-chain", "candidate")
        assert candidate.tags["target"] == "onnxruntime"
        # a reviewer approves; the schedule of promote_model does the rest
        approve(local_services, "keras-chain", candidate.version)
        promoted = _wait("promotion of the champion",
                         lambda: client.get_model_version("keras-chain", candidate.version).tags.get("promoted_uri"), 300, log)  # fmt: skip
        assert promoted.endswith("/keras-chain/1/")
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # make airflow's Ctrl-C: it stops standalone's whole process group
        try:
            server.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        standalone = pid_file(local_services)
        if standalone.exists():  # it did not get to stop Airflow: stop it here, or its scheduler runs other tests' DAGs
            stop_group(int(standalone.read_text()))
        assert server.returncode == 0, log.read_text()[-3000:]
