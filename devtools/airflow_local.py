"""``make airflow``: Airflow as a user runs it, locally: ``airflow standalone`` (API server and UI,
scheduler, DAG processor, triggerer; LocalExecutor on SQLite) with the project's DAGs and plugin,
its connections and pool, beside the local MLflow and S3 services (started, or reused if running).

Prints the URL and the login, then stays in the foreground until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import psutil

from devtools import services
from devtools.demo import airflow, airflow_env, ensure_airflow_db
from tasks.core import settings as settings_module
from tasks.core.settings import Settings

ADMIN = "admin"


def local_secret(settings: Settings, name: str) -> str:
    """A random secret of this checkout: made once under ``<home>/secrets/`` (its owner's alone), never a fixed
    value a local Airflow would accept from anyone who read this code."""
    path = settings.home / "secrets" / name
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.parent.chmod(0o700)
        fd = os.open(path.with_suffix(".new"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(24))
        os.replace(path.with_suffix(".new"), path)
    return path.read_text().strip()


def admin_password(settings: Settings) -> str:
    """The local Airflow's admin password (``make airflow``, ``make cluster``), printed with their URL."""
    return local_secret(settings, "airflow-admin-password")


def standalone_env(settings: Settings, port: int, home: Path | None = None) -> dict[str, str]:
    env = airflow_env(settings, home)
    home = Path(env["AIRFLOW_HOME"])
    return {
        **env,
        "AIRFLOW__API_AUTH__JWT_SECRET": local_secret(settings, "airflow-jwt-secret"),
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW__CORE__LAZY_LOAD_PLUGINS": "False",
        "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "10",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
        "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
    }


def configure(settings: Settings, log_path: Path, home: Path | None = None, env: dict[str, str] | None = None) -> None:
    """Metadata DB, pool compiler_slots, and the connections a deployment would hold (S3 endpoint, MLflow)."""
    ensure_airflow_db(settings, log_path, home, env)
    connections = {
        "aws_default": {"conn_type": "aws", "extra": {"endpoint_url": settings.s3_endpoint_url or ""}},
        "mlflow_default": {"conn_type": "http", "host": settings.mlflow_tracking_uri},
    }
    for conn_id, fields in connections.items():
        airflow(["connections", "delete", conn_id], settings, log_path, home=home, env=env)  # absent the first time
        args = ["connections", "add", conn_id, "--conn-json", json.dumps(fields)]
        if airflow(args, settings, log_path, home=home, env=env) != 0:
            raise SystemExit(f"airflow connections add {conn_id} failed; see {log_path}")


MARK = "COMPILE_PIPELINE_STANDALONE"  # in the environment of everything this standalone starts


def stop_leftover_tasks(mark: str, session: int) -> None:
    """Task processes the LocalExecutor started in process groups of their own and left running.

    They are in standalone's ``session``, or carry ``mark`` in their environment; a task process renames itself
    (setproctitle), which can blank what /proc shows of its environment, so the session is what finds them.
    """
    for process in psutil.process_iter():
        try:
            if os.getsid(process.pid) == session or process.environ().get(MARK) == mark:
                process.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, ProcessLookupError, PermissionError):
            continue


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def stop_on_signals() -> None:
    """Ctrl-C and SIGTERM both stop (a shell without job control starts background jobs with SIGINT ignored)."""
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)


def pid_file(settings: Settings) -> Path:
    """Where the standalone process's id is kept, so whoever started this can stop its whole group."""
    return settings.home / "airflow" / "standalone.pid"


def main(argv: list[str] | None = None) -> int:
    stop_on_signals()
    parser = argparse.ArgumentParser(prog="python -m devtools.airflow_local", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("AIRFLOW_PORT", "8080")))
    port = parser.parse_args(argv).port
    settings = settings_module.load()
    services.start(settings, log=lambda m: print("  " + m))
    log_path = settings.home / "airflow" / "standalone.log"
    configure(settings, log_path)
    env = {**standalone_env(settings, port), MARK: str(os.getpid())}
    Path(env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]).write_text(
        json.dumps({ADMIN: admin_password(settings)})
    )
    with open(log_path, "a") as log:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "airflow"), "standalone"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    pid_file(settings).write_text(str(process.pid))
    url = f"http://127.0.0.1:{port}"
    try:
        services.wait_until_answering("airflow standalone", process, f"{url}/api/v2/monitor/health", log_path, 300)
        print(f"Airflow: {url}  (login {ADMIN} / {admin_password(settings)}; log {log_path})")
        print(f"MLflow:  {settings.mlflow_tracking_uri}   S3 endpoint: {settings.s3_endpoint_url}")
        print("Trigger compile_pipeline from its form (Dags -> compile_pipeline -> Trigger), or:")
        print(
            f"  AIRFLOW_HOME={env['AIRFLOW_HOME']} airflow dags trigger compile_pipeline -c '{{\"batch_sizes\": [1, 8]}}'"
        )
        print("Ctrl-C stops Airflow; `make stop` stops MLflow and S3.", flush=True)
        return process.wait()
    except KeyboardInterrupt:
        return 0
    except services.ServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        services.stop_child(process, grace_s=60)
        stop_leftover_tasks(env[MARK], process.pid)  # started with a session of its own
        pid_file(settings).unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
