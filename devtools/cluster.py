"""``make cluster``: Airflow on its CeleryExecutor, locally, as it runs on a fleet.

A Redis broker, the scheduler, the DAG processor, the API server (UI and the
execution API the workers report to) and two Celery workers, each on its own
queues as on separate machines: ``compile`` (the CPU compile fleet) and
``accelerator`` + ``default`` (the accelerator hosts, which also run the light
stages). Beside them the local MLflow and S3 services (started, or reused).

Each worker reports its own hostname (``compile-worker``, ``accelerator-worker``),
which Airflow records on every task instance, so where each task ran can be read
back from the UI or the REST API. All of it shares one metadata DB (SQLite), one
log folder and one pipeline home (runs, compile cache): on one machine that is
the disk; across machines it is Postgres, remote logging and a shared volume
(see the README's "Scaling out").

Stays in the foreground until Ctrl-C or SIGTERM, then stops everything it started.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from devtools import services
from devtools.airflow_local import ADMIN, configure, standalone_env, stop_on_signals
from tasks.core import settings as settings_module
from tasks.core.settings import WORKER_HOSTNAME_ENV, Settings


@dataclass(frozen=True)
class WorkerKind:
    """One kind of Celery worker: the queues it takes and how many tasks it runs at once."""

    name: str
    queues: tuple[str, ...]
    concurrency: int

    @property
    def hostname(self) -> str:
        return f"{self.name}-worker"


# The queues the DAGs use: compile tasks on "compile", validation and benchmarks on "accelerator",
# everything else on Airflow's "default" queue.
WORKERS = (
    WorkerKind("compile", ("compile",), concurrency=2),
    WorkerKind("accelerator", ("accelerator", "default"), concurrency=4),
)


class ClusterError(RuntimeError):
    pass


def redis_server() -> str:
    path = shutil.which("redis-server")
    if not path:
        raise ClusterError(
            "redis-server is not installed: `make cluster` installs Debian's redis-server, "
            "or install it yourself (apt-get install redis-server)"
        )
    return path


@dataclass
class LocalCluster:
    """The processes of a local Celery deployment; ``start`` and ``stop`` them, or lose and restart a worker."""

    settings: Settings
    port: int = 8080
    redis_port: int = 6379
    heartbeat_timeout_s: int = 60  # a task whose worker died is failed (and retried) after this long
    extra_env: dict[str, str] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_dir(self) -> Path:
        return self.settings.home / "cluster"

    @property
    def airflow_home(self) -> Path:
        # Its own metadata DB: runs queued by `make airflow` or the demo (asset-triggered ones too) stay there.
        return self.log_dir / "airflow"

    @property
    def broker_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    def env(self) -> dict[str, str]:
        return {
            **standalone_env(self.settings, self.port, self.airflow_home),
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "tasks.core.settings.worker_hostname",
            "AIRFLOW__CELERY__BROKER_URL": self.broker_url,
            "AIRFLOW__CELERY__RESULT_BACKEND": f"redis://127.0.0.1:{self.redis_port}/1",
            # Tasks are acknowledged when they end: one running longer than this is handed to another worker.
            "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "21600",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(self.heartbeat_timeout_s),
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
            **self.extra_env,
        }

    def _spawn(self, name: str, command: list[str], env: dict[str, str]) -> subprocess.Popen:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"{name}.log", "ab") as log:
            process = subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=self.settings.home, start_new_session=True,
            )  # fmt: skip
        self.processes[name] = process
        return process

    def _airflow(self, *args: str) -> list[str]:
        return [str(Path(sys.executable).parent / "airflow"), *args]

    def start_redis(self) -> None:
        import redis

        data = self.log_dir / "redis"
        data.mkdir(parents=True, exist_ok=True)
        # A broker only, nothing persisted: messages queued when it stops are lost, and the scheduler fails (and
        # retries) their tasks after [scheduler] task_queued_timeout. A deployment keeps its broker up instead.
        command = [redis_server(), "--bind", "127.0.0.1", "--port", str(self.redis_port), "--dir", str(data),
                   "--save", "", "--appendonly", "no", "--daemonize", "no"]  # fmt: skip
        process = self._spawn("redis", command, dict(os.environ))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise ClusterError(f"redis-server exited with code {process.returncode}; log {self.log_dir}/redis.log")
            try:
                if redis.Redis(host="127.0.0.1", port=self.redis_port, socket_timeout=1).ping():
                    return
            except redis.exceptions.ConnectionError:
                time.sleep(0.2)
        raise ClusterError(f"redis-server did not answer on 127.0.0.1:{self.redis_port}")

    def start_worker(self, kind: WorkerKind) -> subprocess.Popen:
        env = {**self.env(), WORKER_HOSTNAME_ENV: kind.hostname}
        # Logs are read from the shared log folder, so the workers serve none (one port per host otherwise).
        command = self._airflow("celery", "worker", "--queues", ",".join(kind.queues),
                                "--concurrency", str(kind.concurrency), "--celery-hostname", f"{kind.name}@%h",
                                "--pid", str(self.log_dir / f"{kind.hostname}.pid"), "--skip-serve-logs")  # fmt: skip
        return self._spawn(kind.hostname, command, env)

    def start(self, log=print) -> None:
        if services.port_taken(self.port):
            raise ClusterError(f"port {self.port} on 127.0.0.1 is in use: choose another with --port")
        if services.port_taken(self.redis_port):
            raise ClusterError(
                f"port {self.redis_port} on 127.0.0.1 is in use (a system redis-server?): "
                "choose another with --redis-port or REDIS_PORT"
            )
        services.start(self.settings, log=lambda m: log("  " + m))
        self.start_redis()
        log(f"  redis: broker on {self.broker_url}")
        configure(self.settings, self.log_dir / "configure.log", self.airflow_home)
        env = self.env()
        Path(env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]).write_text(json.dumps({ADMIN: ADMIN}))
        api = self._spawn(
            "api-server", self._airflow("api-server", "--host", "127.0.0.1", "--port", str(self.port)), env
        )
        self._spawn("scheduler", self._airflow("scheduler"), env)
        self._spawn("dag-processor", self._airflow("dag-processor"), env)
        for kind in WORKERS:
            self.start_worker(kind)
        services.wait_until_answering(
            "airflow api-server", api, f"{self.url}/api/v2/monitor/health", self.log_dir / "api-server.log", 300
        )
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise ClusterError(f"{name} exited with code {process.returncode}; log {self.log_dir}/{name}.log")

    def lose_worker(self, kind: WorkerKind) -> list[int]:
        """SIGKILL a worker and every process under it, as when its machine goes away; return their pids."""

        process = self.processes.pop(kind.hostname)
        try:
            tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            tree = []
        for member in tree:
            try:
                member.kill()
            except psutil.NoSuchProcess:
                pass
        process.wait()
        return [member.pid for member in tree]

    def stop(self, grace_s: float = 20) -> None:
        # Workers first (they take nothing more), the broker last.
        for name in sorted(self.processes, key=lambda n: (n == "redis", not n.endswith("-worker"))):
            services.stop_child(self.processes[name], grace_s)
        self.processes.clear()


def main(argv: list[str] | None = None) -> int:
    stop_on_signals()
    parser = argparse.ArgumentParser(prog="python -m devtools.cluster", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("AIRFLOW_PORT", "8080")))
    parser.add_argument("--redis-port", type=int, default=int(os.environ.get("REDIS_PORT", "6379")))
    args = parser.parse_args(argv)
    cluster = LocalCluster(settings_module.load(), port=args.port, redis_port=args.redis_port)
    try:
        cluster.start()
        print(f"Airflow (CeleryExecutor): {cluster.url}  (login {ADMIN} / {ADMIN}; logs {cluster.log_dir})")
        for kind in WORKERS:
            print(f"  worker {kind.hostname}: queues {', '.join(kind.queues)}, {kind.concurrency} tasks at once")
        print(f"MLflow: {cluster.settings.mlflow_tracking_uri}   S3 endpoint: {cluster.settings.s3_endpoint_url}")
        print("Trigger compile_pipeline from its form (Dags -> compile_pipeline -> Trigger); the task instances")
        print("show which worker ran them (Host).")
        print("Ctrl-C stops Airflow, the workers and Redis; `make stop` stops MLflow and S3.", flush=True)
        while all(process.poll() is None for process in cluster.processes.values()):
            time.sleep(2)
        exited = [name for name, process in cluster.processes.items() if process.poll() is not None]
        print(f"error: {', '.join(exited)} exited; logs in {cluster.log_dir}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    except (ClusterError, services.ServiceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        cluster.stop()


if __name__ == "__main__":
    sys.exit(main())
