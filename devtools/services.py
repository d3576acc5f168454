"""Local services for the demo and the integration tests: an S3 endpoint and an MLflow tracking server.

``python -m devtools.services start|stop|status``. The S3 endpoint is moto's standalone
server, spoken to only through boto3 with an endpoint URL, as AWS S3 or MinIO would
be. MLflow keeps its metadata in SQLite and proxies artifacts into that endpoint.
Each service runs in its own process group (the MLflow server starts helper
processes) and is stopped as a group.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from tasks.core import settings as settings_module
from tasks.core.settings import Settings

LOCAL_CREDENTIALS = {
    # moto accepts any key; these are placeholders, not secrets.
    "AWS_ACCESS_KEY_ID": "local-access-key",
    "AWS_SECRET_ACCESS_KEY": "local-secret-key",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class ServiceError(RuntimeError):
    pass


@dataclass(frozen=True)
class Service:
    name: str
    port: int
    command: list[str]
    health_url: str
    env: dict[str, str]
    start_timeout_s: float


def local_env(settings: Settings) -> dict[str, str]:
    """Environment for clients of the local services (the pipeline, the tests, the demo)."""
    env = {k: os.environ.get(k, v) for k, v in {**LOCAL_CREDENTIALS, **settings_module.MLFLOW_CLIENT_ENV}.items()}
    env |= {
        "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
        "S3_ENDPOINT_URL": settings.s3_endpoint_url or "",
        "MLFLOW_S3_ENDPOINT_URL": settings.s3_endpoint_url or "",
        # the local MLflow has no logins, so approval cannot be a control here (README "Who may do what")
        "APPROVAL_CONTROL": os.environ.get("APPROVAL_CONTROL", "convention"),
    }
    return env


def definitions(settings: Settings) -> list[Service]:
    bin_dir = Path(sys.executable).parent
    mlflow_dir = settings.home / "mlflow"
    host_ports = f"127.0.0.1:{settings.mlflow_port},localhost:{settings.mlflow_port}"
    return [
        Service(
            name="s3",
            port=settings.s3_port,
            command=[str(bin_dir / "moto_server"), "-H", "127.0.0.1", "-p", str(settings.s3_port)],
            health_url=f"http://127.0.0.1:{settings.s3_port}/moto-api/",
            env={},
            start_timeout_s=60,
        ),
        Service(
            name="mlflow",
            port=settings.mlflow_port,
            command=[
                str(bin_dir / "mlflow"),
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(settings.mlflow_port),
                "--backend-store-uri",
                f"sqlite:///{mlflow_dir / 'mlflow.db'}",
                "--artifacts-destination",
                f"s3://{settings.mlflow_artifacts_bucket}/artifacts",
                "--allowed-hosts",
                host_ports,
                "--workers",
                "1",
            ],  # fmt: skip
            health_url=f"http://127.0.0.1:{settings.mlflow_port}/health",
            env={"MLFLOW_S3_ENDPOINT_URL": settings.s3_endpoint_url or ""},
            start_timeout_s=180,
        ),
    ]


def _pid_file(settings: Settings, name: str) -> Path:
    return settings.home / "services" / f"{name}.pid"


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def port_taken(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _running_pid(settings: Settings, name: str) -> int | None:
    path = _pid_file(settings, name)
    try:
        pid = int(path.read_text())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        return None
    return pid


def ensure_buckets(settings: Settings, *uris: str) -> None:
    """The buckets of the local services, and those of any ``s3://`` URIs given (a run store, a compile cache)."""
    _ensure_buckets(settings, [urlparse(uri).netloc for uri in uris if uri.startswith("s3://")])


def _ensure_buckets(settings: Settings, more: list[str] | None = None) -> None:
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        region_name=LOCAL_CREDENTIALS["AWS_DEFAULT_REGION"],
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", LOCAL_CREDENTIALS["AWS_ACCESS_KEY_ID"]),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", LOCAL_CREDENTIALS["AWS_SECRET_ACCESS_KEY"]),
        config=Config(request_checksum_calculation="when_required"),
    )
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    for bucket in dict.fromkeys([settings.serving_bucket, settings.mlflow_artifacts_bucket, *(more or [])]):
        if bucket not in existing:
            client.create_bucket(Bucket=bucket)


def start(settings: Settings | None = None, log=print) -> None:
    """Start whatever is not already running; reuse what is."""
    settings = settings or settings_module.load()
    (settings.home / "services").mkdir(parents=True, exist_ok=True)
    (settings.home / "mlflow").mkdir(parents=True, exist_ok=True)
    for service in definitions(settings):
        if _running_pid(settings, service.name) and _healthy(service.health_url):
            log(f"{service.name}: already running on 127.0.0.1:{service.port}")
        else:
            _start_one(settings, service, log)
        if service.name == "s3":  # and the buckets of a run store or compile cache on it
            ensure_buckets(settings, settings.run_store_uri, settings.compile_cache_uri)


def _start_one(settings: Settings, service: Service, log) -> None:
    if port_taken(service.port):
        variable = "S3_PORT" if service.name == "s3" else "MLFLOW_PORT"
        raise ServiceError(
            f"cannot start {service.name}: port {service.port} on 127.0.0.1 is already in use by another program; "
            f"stop it or choose another port with {variable}=<port>"
        )
    log_path = settings.home / "services" / f"{service.name}.log"
    env = {**os.environ, **local_env(settings), **service.env}
    with open(log_path, "ab") as out:
        process = subprocess.Popen(
            service.command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=settings.home,
            start_new_session=True, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    _pid_file(settings, service.name).write_text(str(process.pid))
    wait_until_answering(service.name, process, service.health_url, log_path, service.start_timeout_s)
    log(f"{service.name}: started on http://127.0.0.1:{service.port} (log {log_path})")


def wait_until_answering(name: str, process: subprocess.Popen, url: str, log_path: Path, timeout_s: float) -> None:
    """Wait until ``url`` answers 200; a process that exits or never answers is stopped and named, with its log."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise ServiceError(f"{name} exited with code {process.returncode} while starting; log {log_path}:\n{tail}")
        if _healthy(url):
            return
        time.sleep(0.5)
    stop_group(process.pid)
    raise ServiceError(f"{name} did not answer {url} within {timeout_s:.0f} s; log {log_path}")


def stop_group(pid: int, grace_s: float = 10) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def stop_child(process: subprocess.Popen, grace_s: float = 10) -> None:
    """Stop a child started in its own process group: SIGTERM the group, reap the child, SIGKILL what is left.

    Not :func:`stop_group`, which polls the group: a child that exited and is not reaped yet keeps it alive.
    """
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            continue
        if sig == signal.SIGTERM:  # the leader is gone; its helpers may not be
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return


def stop(settings: Settings | None = None, log=print) -> None:
    settings = settings or settings_module.load()
    for service in reversed(definitions(settings)):
        pid = _running_pid(settings, service.name)
        if pid is None:
            log(f"{service.name}: not running")
        else:
            stop_group(pid)
            log(f"{service.name}: stopped")
        _pid_file(settings, service.name).unlink(missing_ok=True)


def restart(name: str, settings: Settings | None = None, log=print) -> None:
    """Stop one service and start it again on the same port and store (what an upgrade or a crash does)."""
    settings = settings or settings_module.load()
    (service,) = [s for s in definitions(settings) if s.name == name]
    pid = _running_pid(settings, name)
    if pid is not None:
        stop_group(pid)
    _start_one(settings, service, log)


def status(settings: Settings | None = None, log=print) -> bool:
    settings = settings or settings_module.load()
    up = True
    for service in definitions(settings):
        healthy = _running_pid(settings, service.name) is not None and _healthy(service.health_url)
        up &= healthy
        log(f"{service.name}: {'up' if healthy else 'down'} (127.0.0.1:{service.port})")
    return up


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.services", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["start", "stop", "status"])
    action = parser.parse_args(argv).action
    try:
        if action == "start":
            start()
        elif action == "stop":
            stop()
        else:
            return 0 if status() else 1
    except ServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
