"""Deployment settings, read from environment variables with local defaults.

Credentials are never read here: boto3 and MLflow take them from the standard
environment variables (or an Airflow connection exported as such).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, str(default))
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer port, got {raw!r}") from None


@dataclass(frozen=True)
class Settings:
    home: Path
    mlflow_port: int
    s3_port: int
    mlflow_tracking_uri: str
    s3_endpoint_url: str | None
    serving_bucket: str
    serving_prefix: str
    mlflow_artifacts_bucket: str
    experiment: str
    compile_cache_uri: str  # a directory or s3://bucket/prefix; empty turns the compile cache off
    # Where a run's stages hand each other what they made: file:///<dir> on one machine, s3://bucket/prefix on a
    # fleet (tasks.core.store). Each run lives under <run_store_uri>/<run id>/.
    run_store_uri: str = ""
    # The host classes this deployment has workers for (tasks.targets.HOST_CLASSES); empty: this machine runs
    # every task itself (make demo, airflow dags test), so the plan judges every target here.
    host_classes: tuple[str, ...] = ()
    # Modules whose code a module: factory or trainer may run without trust_model_code / trust_training_code:
    # the project's own built-ins by default; a team adds its model package (TRUSTED_CODE_MODULES=acme.models).
    trusted_code_modules: tuple[str, ...] = ("tasks.models",)
    # Where serving pods read the model repository from, written into their Deployment: never the pipeline's
    # own endpoint (a local moto or MinIO no pod can reach). None: AWS S3 itself; "": the pipeline's region.
    serving_s3_endpoint_url: str | None = None
    serving_region: str = ""
    # "required": promotion first proves that the pipeline's MLflow login cannot write the approved model (approval
    # is a control, tasks.registry.review); "convention": a registry without logins (the local services), where
    # nothing can be a control, and promotion says so.
    approval_control: str = "required"

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"

    @property
    def scratch_dir(self) -> Path:
        """This host's own working space: what a stage writes before it puts it in the run store."""
        return self.home / "scratch"

    @property
    def object_cache_dir(self) -> Path:
        """This host's content-addressed cache of what it fetched from the run store (tasks.core.store)."""
        return self.home / "cache" / "objects"

    @property
    def locks_dir(self) -> Path:
        """This host's locks (one benchmark sweep at a time per host)."""
        return self.home / "locks"


WORKER_HOSTNAME_ENV = "COMPILE_PIPELINE_WORKER_HOSTNAME"
# Set for every MLflow client. Otherwise clients of a server that proxies S3 artifacts download through
# presigned URLs the server mints with its own credentials: a session token travels in the URL's query
# string into clients and S3 access logs. Off, downloads stream through the tracking server.
MLFLOW_CLIENT_ENV = {"MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD": "false"}


def worker_hostname() -> str:
    """Airflow's ``[core] hostname_callable`` for workers: the name the worker was given, else the FQDN.

    Here, in a module that imports nothing heavy, because every task process calls it.
    """

    return os.environ.get(WORKER_HOSTNAME_ENV) or socket.getfqdn()


def this_host() -> str:
    """The name this host goes by in what the pipeline writes (``file://`` URIs, the hosts a report names): the
    worker's given name (``make cluster``'s hosts), else the machine's; not its FQDN, which is ``localhost`` on some
    machines, where every host would claim every ``file://<host>/`` path as its own."""
    return os.environ.get(WORKER_HOSTNAME_ENV) or socket.gethostname()


def code_refusal(module: str, trusted: bool, what: str, setting: str) -> str:
    """Why importing ``module`` (running its code) is refused, or "" where a person said so: ``trusted`` (the
    param ``setting``) or a module under TRUSTED_CODE_MODULES."""
    prefixes = load().trusted_code_modules
    if trusted or any(module == p or module.startswith(f"{p}.") for p in prefixes):
        return ""
    return (
        f"{what} imports and runs module {module!r}, which is not under TRUSTED_CODE_MODULES "
        f"({', '.join(prefixes) or 'none'}); refused by default. Set {setting}=true for this run if you trust that "
        "code, or add its package to TRUSTED_CODE_MODULES"
    )


def _choice(name: str, allowed: tuple[str, ...]) -> str:
    """One of ``allowed`` (the first by default); anything else is refused by name."""
    value = os.environ.get(name, allowed[0]).strip() or allowed[0]
    if value not in allowed:
        raise ValueError(f"{name}={value!r} must be one of: {', '.join(allowed)}")
    return value


def load() -> Settings:
    home = Path(os.environ.get("COMPILE_PIPELINE_HOME", PROJECT_ROOT / ".work")).resolve()
    mlflow_port = _int("MLFLOW_PORT", 5050)
    experiment = os.environ.get("MLFLOW_EXPERIMENT", "compile-pipeline")
    if not experiment or experiment != experiment.strip() or not experiment.isprintable():
        # it is shown in reports, logs and the UI; MLflow keeps it as a name only (artifact paths use the id)
        raise ValueError(
            f"MLFLOW_EXPERIMENT {experiment!r} must be non-empty, without control characters or edge spaces"
        )
    s3_port = _int("S3_PORT", 9010)
    return Settings(
        home=home,
        mlflow_port=mlflow_port,
        s3_port=s3_port,
        mlflow_tracking_uri=os.environ.get("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{mlflow_port}"),
        # Empty means AWS S3 itself; anything else is an S3-compatible endpoint (moto, MinIO).
        s3_endpoint_url=os.environ.get("S3_ENDPOINT_URL", f"http://127.0.0.1:{s3_port}") or None,
        serving_bucket=os.environ.get("SERVING_BUCKET", "model-serving"),
        serving_prefix=os.environ.get("SERVING_PREFIX", "models").strip("/"),
        mlflow_artifacts_bucket=os.environ.get("MLFLOW_ARTIFACTS_BUCKET", "mlflow-artifacts"),
        experiment=experiment,
        compile_cache_uri=os.environ.get("COMPILE_CACHE_URI", str(home / "compile-cache")),
        run_store_uri=(os.environ.get("RUN_STORE_URI") or (home / "runs").as_uri()).rstrip("/"),
        host_classes=tuple(c.strip() for c in os.environ.get("HOST_CLASSES", "").split(",") if c.strip()),
        trusted_code_modules=tuple(
            m.strip() for m in os.environ.get("TRUSTED_CODE_MODULES", "tasks.models").split(",") if m.strip()
        ),
        serving_s3_endpoint_url=os.environ.get("SERVING_S3_ENDPOINT_URL") or None,
        serving_region=os.environ.get("SERVING_AWS_REGION", ""),
        approval_control=_choice("APPROVAL_CONTROL", ("required", "convention")),
    )
