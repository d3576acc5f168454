"""``make cluster``: Airflow on its CeleryExecutor, locally, as it runs on a fleet.

PostgreSQL (the metadata database, as Airflow requires for the CeleryExecutor), a Redis broker, the scheduler, the
DAG processor, the API server (UI and the execution API the workers report to) and two Celery workers, each as a
host of its own: its own hostname, its own home directory (scratch space, fetch cache, benchmark lock) and its own
Airflow log folder, no directory shared with another process. ``compile-worker`` takes queue ``compile`` (the CPU
compile fleet); ``cpu-worker`` takes ``cpu`` (the host class that validates and benchmarks CPU targets) and
``default``. What crosses hosts goes through S3 (moto) only: the run store (``RUN_STORE_URI``), the compile cache
and Airflow's task logs (remote logging, read back by the API server). Beside them the local MLflow and S3 services
(started, or reused).

Each worker reports its own hostname, which Airflow records on every task instance, so where each task ran can be
read back from the UI or the REST API.

Stays in the foreground until Ctrl-C or SIGTERM, then stops everything it started.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from devtools import services
from devtools.airflow_local import ADMIN, admin_password, configure, standalone_env, stop_on_signals
from tasks import targets
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


# The compile fleet, and the hosts of host class cpu (which also take Airflow's default queue: the light stages).
WORKERS = (
    WorkerKind("compile", (targets.PLAN_QUEUE,), concurrency=2),
    WorkerKind("cpu", ("cpu", "default"), concurrency=4),
)
HOST_CLASSES = ("cpu",)  # the host classes this cluster has workers for (no Neuron or GPU hosts here)
BUCKET = "pipeline-fleet"  # the run store, the compile cache and the task logs, each under its own prefix


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


def postgres_bin() -> Path:
    """The directory of PostgreSQL's server programs (Debian keeps them off PATH, under /usr/lib/postgresql)."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not versions:
        raise ClusterError(
            "PostgreSQL is not installed: `make cluster` installs Debian's postgresql, "
            "or install it yourself (apt-get install postgresql)"
        )
    return versions[-1].parent


@dataclass
class LocalPostgres:
    """A throw-away PostgreSQL server on 127.0.0.1: trust authentication, no fsync (it holds only this cluster's
    metadata). As root it runs as Debian's ``postgres`` user: PostgreSQL refuses to run as root."""

    port: int
    log_path: Path
    data_dir: Path | None = None
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/airflow"

    def _as_owner(self) -> dict:
        if os.geteuid() != 0:
            return {}
        owner = pwd.getpwnam("postgres")
        return {"user": owner.pw_uid, "group": owner.pw_gid}

    def start(self) -> None:
        bin_dir, owner = postgres_bin(), self._as_owner()
        # Outside the project: as root the server's own user must reach it, and a test's home is root's alone.
        self.data_dir = Path(tempfile.mkdtemp(prefix="compile-pipeline-postgres-"))
        if owner:
            os.chown(self.data_dir, owner["user"], owner["group"])
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            subprocess.run(
                [str(bin_dir / "initdb"), "-D", str(self.data_dir / "data"), "-U", "postgres", "--auth=trust",
                 "--encoding=UTF8", "--no-sync"],
                stdout=log, stderr=subprocess.STDOUT, check=True, cwd=self.data_dir, **owner,
            )  # fmt: skip
            self.process = subprocess.Popen(
                [str(bin_dir / "postgres"), "-D", str(self.data_dir / "data"), "-p", str(self.port),
                 "-h", "127.0.0.1", "-k", str(self.data_dir), "-c", "fsync=off", "-c", "synchronous_commit=off",
                 "-c", "full_page_writes=off", "-c", "max_connections=200"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.data_dir,
                start_new_session=True, **owner,
            )  # fmt: skip
        import psycopg2

        deadline = time.monotonic() + 60
        while True:
            if self.process.poll() is not None:
                raise ClusterError(f"postgres exited with code {self.process.returncode}; log {self.log_path}")
            try:
                connection = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres")
                break
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise ClusterError(
                        f"postgres did not answer on 127.0.0.1:{self.port}; log {self.log_path}"
                    ) from None
                time.sleep(0.3)
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("CREATE DATABASE airflow")
        connection.close()

    def stop(self) -> None:
        if self.process is not None:
            services.stop_child(self.process, grace_s=20)
            self.process = None
        if self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir = None


@dataclass
class LocalCluster:
    """The processes of a local Celery deployment; ``start`` and ``stop`` them, or lose and restart a worker."""

    settings: Settings
    port: int = 8080
    redis_port: int = 6379
    postgres_port: int = 5432
    heartbeat_timeout_s: int = 60  # a task whose worker died is failed (and retried) after this long
    extra_env: dict[str, str] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    postgres: LocalPostgres | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_dir(self) -> Path:
        return self.settings.home / "cluster"

    @property
    def airflow_home(self) -> Path:
        """The Airflow home of the scheduler, DAG processor and API server (the control plane's host)."""
        return self.host_home("airflow")

    def host_home(self, host: str) -> Path:
        """A host's own directory: nothing under it is read by another process of the cluster."""
        return self.log_dir / "hosts" / host

    @property
    def broker_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def bucket_uri(self) -> str:
        return f"s3://{BUCKET}"

    def env(self, host: str = "airflow") -> dict[str, str]:
        """The environment of one host's processes: its own home and log folder, everything shared on S3."""
        home = self.host_home(host)
        return {
            **standalone_env(self.settings, self.port, self.airflow_home),
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.postgres.url if self.postgres else "",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "tasks.core.settings.worker_hostname",
            "AIRFLOW__CELERY__BROKER_URL": self.broker_url,
            "AIRFLOW__CELERY__RESULT_BACKEND": f"redis://127.0.0.1:{self.redis_port}/1",
            # Tasks are acknowledged when they end: one running longer than this is handed to another worker.
            "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "21600",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(self.heartbeat_timeout_s),
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
            # Task logs go to S3 when a task ends; the API server reads them there (no shared log folder).
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
            "AIRFLOW__LOGGING__REMOTE_LOGGING": "True",
            "AIRFLOW__LOGGING__REMOTE_BASE_LOG_FOLDER": f"{self.bucket_uri}/airflow-logs",
            "AIRFLOW__LOGGING__REMOTE_LOG_CONN_ID": "aws_default",
            "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(
                {"conn_type": "aws", "extra": {"endpoint_url": self.settings.s3_endpoint_url or ""}}
            ),
            "AIRFLOW_HOME": str(home),
            "COMPILE_PIPELINE_HOME": str(home),
            "RUN_STORE_URI": f"{self.bucket_uri}/runs",
            "COMPILE_CACHE_URI": f"{self.bucket_uri}/compile-cache",
            "HOST_CLASSES": ",".join(HOST_CLASSES),
            WORKER_HOSTNAME_ENV: host,
            **self.extra_env,
        }

    def _spawn(self, name: str, command: list[str], env: dict[str, str], cwd: Path | None = None) -> subprocess.Popen:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        cwd = cwd or self.log_dir
        cwd.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"{name}.log", "ab") as log:
            process = subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=cwd, start_new_session=True,
            )  # fmt: skip
        self.processes[name] = process
        return process

    def _airflow(self, *args: str) -> list[str]:
        return [str(Path(sys.executable).parent / "airflow"), *args]

    def start_redis(self) -> None:
        import redis

        data = self.host_home("redis")
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

    def start_worker(self, kind: WorkerKind, **env_overrides: str) -> subprocess.Popen:
        """Start (or start again) a worker as a host of its own; ``env_overrides`` change its settings."""
        env = {**self.env(kind.hostname), **env_overrides}
        # No log server: logs reach the API server through S3 (one log server port per host otherwise).
        command = self._airflow("celery", "worker", "--queues", ",".join(kind.queues),
                                "--concurrency", str(kind.concurrency), "--celery-hostname", f"{kind.name}@%h",
                                "--pid", str(self.host_home(kind.hostname) / "worker.pid"),
                                "--skip-serve-logs")  # fmt: skip
        return self._spawn(kind.hostname, command, env, cwd=self.host_home(kind.hostname))

    def start(self, log=print) -> None:
        for port, what, option in (
            (self.port, "the API server", "--port"),
            (self.redis_port, "Redis (a system redis-server?)", "--redis-port or REDIS_PORT"),
            (self.postgres_port, "PostgreSQL (a system postgres?)", "--postgres-port or POSTGRES_PORT"),
        ):
            if services.port_taken(port):
                raise ClusterError(f"port {port} on 127.0.0.1, for {what}, is in use: choose another with {option}")
        services.start(self.settings, log=lambda m: log("  " + m))
        services.ensure_buckets(self.settings, self.bucket_uri)
        self.postgres = LocalPostgres(self.postgres_port, self.log_dir / "postgres.log")
        self.postgres.start()
        log(f"  postgres: metadata database on 127.0.0.1:{self.postgres_port}")
        self.start_redis()
        log(f"  redis: broker on {self.broker_url}")
        env = self.env()
        configure(self.settings, self.log_dir / "configure.log", self.airflow_home, env=env)
        passwords = json.dumps({ADMIN: admin_password(self.settings)})
        Path(env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]).write_text(passwords)
        api = self._spawn(
            "api-server", self._airflow("api-server", "--host", "127.0.0.1", "--port", str(self.port)), env,
            cwd=self.airflow_home,
        )  # fmt: skip
        self._spawn("scheduler", self._airflow("scheduler"), env, cwd=self.airflow_home)
        self._spawn("dag-processor", self._airflow("dag-processor"), env, cwd=self.airflow_home)
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

    def stop_worker(self, kind: WorkerKind, grace_s: float = 30) -> None:
        services.stop_child(self.processes.pop(kind.hostname), grace_s)

    def stop(self, grace_s: float = 20) -> None:
        # Workers first (they take nothing more), the broker and the database last.
        for name in sorted(self.processes, key=lambda n: (n == "redis", not n.endswith("-worker"))):
            services.stop_child(self.processes[name], grace_s)
        self.processes.clear()
        if self.postgres is not None:
            self.postgres.stop()


def main(argv: list[str] | None = None) -> int:
    stop_on_signals()
    parser = argparse.ArgumentParser(prog="python -m devtools.cluster", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("AIRFLOW_PORT", "8080")))
    parser.add_argument("--redis-port", type=int, default=int(os.environ.get("REDIS_PORT", "6379")))
    parser.add_argument("--postgres-port", type=int, default=int(os.environ.get("POSTGRES_PORT", "5432")))
    args = parser.parse_args(argv)
    cluster = LocalCluster(
        settings_module.load(), port=args.port, redis_port=args.redis_port, postgres_port=args.postgres_port
    )
    try:
        cluster.start()
        login = f"login {ADMIN} / {admin_password(cluster.settings)}"
        print(f"Airflow (CeleryExecutor, PostgreSQL): {cluster.url}  ({login}; logs {cluster.log_dir})")
        for kind in WORKERS:
            print(f"  worker {kind.hostname}: queues {', '.join(kind.queues)}, {kind.concurrency} tasks at once, "
                  f"home {cluster.host_home(kind.hostname)}")  # fmt: skip
        print(f"  run store {cluster.bucket_uri}/runs, compile cache {cluster.bucket_uri}/compile-cache, "
              f"task logs {cluster.bucket_uri}/airflow-logs")  # fmt: skip
        print(f"MLflow: {cluster.settings.mlflow_tracking_uri}   S3 endpoint: {cluster.settings.s3_endpoint_url}")
        print("Trigger compile_pipeline from its form (Dags -> compile_pipeline -> Trigger); the task instances")
        print("show which worker ran them (Host).")
        print("Ctrl-C stops Airflow, the workers, Redis and PostgreSQL; `make stop` stops MLflow and S3.", flush=True)
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
