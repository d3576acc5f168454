"""Shared fixtures: a private working directory per session, the exported model, real local services."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from devtools import services
from tasks.core import settings as settings_module
from tasks.core.params import PipelineParams
from tasks.datasets import prepare as datasets


def wait_until(what: str, check, timeout_s: float, logs, poll_s: float = 5.0):
    """``check()``'s first truthy result; after ``timeout_s`` an AssertionError naming ``what``, with ``logs()``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(poll_s)
    raise AssertionError(f"{what} did not happen in {timeout_s} s; logs:\n{logs()}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ReliabilityTally:
    """What the reliability tests tried; printed as one line at the end of the session."""

    def __init__(self):
        self.bad_inputs = self.faults = self.races = self.lost_or_half_visible = 0
        self.pointer_races = self.anonymous_refused = self.load_runs_held = 0

    def line(self) -> str:
        return (
            f"reliability: {self.bad_inputs} bad inputs tried, {self.faults} faults injected, {self.races} races run "
            f"({self.pointer_races} of them serving-pointer races), {self.anonymous_refused} anonymous or forged "
            f"requests refused, {self.load_runs_held} load runs held, "
            f"{self.lost_or_half_visible} versions lost or half-visible"
        )


TALLY = ReliabilityTally()


@pytest.fixture(scope="session")
def reliability() -> ReliabilityTally:
    return TALLY


def pytest_terminal_summary(terminalreporter):
    if TALLY.bad_inputs or TALLY.faults or TALLY.races:
        terminalreporter.write_line(TALLY.line())


# Credentials the whole session runs with: the security test searches every log, report, MLflow record and
# S3 object for them. moto and the MLflow server (no auth) accept any.
SENTINEL_CREDENTIALS = {
    "AWS_SECRET_ACCESS_KEY": f"sentinel-aws-secret-{os.getpid()}-5f3a9c",
    "AWS_SESSION_TOKEN": f"sentinel-aws-token-{os.getpid()}-8b1e07",
    "MLFLOW_TRACKING_USERNAME": "sentinel-user",
    "MLFLOW_TRACKING_PASSWORD": f"sentinel-mlflow-password-{os.getpid()}-c2d4e6",
}


@pytest.fixture(scope="session", autouse=True)
def pipeline_home(tmp_path_factory) -> Path:
    """Every test session writes under its own home, never into the developer's .work/."""
    home = tmp_path_factory.mktemp("home")
    os.environ["COMPILE_PIPELINE_HOME"] = str(home)
    os.environ.update(SENTINEL_CREDENTIALS)
    # Airflow reads its home when first imported (inside tests), so this keeps it off ~/airflow too.
    os.environ["AIRFLOW_HOME"] = str(home / "airflow")
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    return home


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    from tasks.sources.export import export_model

    return export_model(PipelineParams(), tmp_path_factory.mktemp("export"))


@pytest.fixture(scope="session")
def dataset_ref(tmp_path_factory, exported):
    return datasets.prepare("builtin:photos", tmp_path_factory.mktemp("dataset"), exported)


@pytest.fixture(scope="session")
def local_services(pipeline_home):
    """A real S3 endpoint (moto_server) and MLflow server on free ports; stopped at the end."""
    mlflow_port, s3_port = free_port(), free_port()
    env = {
        "MLFLOW_PORT": str(mlflow_port),
        "S3_PORT": str(s3_port),
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{mlflow_port}",
        "S3_ENDPOINT_URL": f"http://127.0.0.1:{s3_port}",
        "MLFLOW_EXPERIMENT": "compile-pipeline-tests",
    }
    os.environ.update(env)
    os.environ.update(services.local_env(settings_module.load()))
    settings = settings_module.load()  # with the local services' environment (APPROVAL_CONTROL among it)
    services.start(settings)
    yield settings
    services.stop(settings)


@pytest.fixture(scope="session")
def compiled_outcome(exported, dataset_ref, tmp_path_factory):
    """The ONNX Runtime fp32 config of the exported model, validated, benchmarked and gated; and its baseline."""
    from tasks.benchmark.harness import benchmark_artifact
    from tasks.benchmark.windows import Harness
    from tasks.compile.run import compile_config
    from tasks.core.records import CompileConfig
    from tasks.core.results import BaselineResult, BenchmarkResult
    from tasks.stages.compile_pipeline.gate import gate_all
    from tasks.validation.predictions import baseline_predictions, validate_artifact

    out = tmp_path_factory.mktemp("compiled")
    artifact = compile_config(exported, CompileConfig(target="onnxruntime", precision="fp32"), out)
    baseline = BaselineResult(
        framework="pytorch",
        predictions=baseline_predictions(exported, dataset_ref, out),
        benchmark=BenchmarkResult(subject="baseline", status="ok"),
    )
    validation = validate_artifact(artifact, dataset_ref, baseline, out)
    # short windows, two streams at most: what the promotion and fault tests read is that a benchmark was recorded
    bench = benchmark_artifact(artifact, dataset_ref, [1, 4], Harness(window_s=0.2, warmup_s=0.1, max_concurrency=2))
    key = artifact.config.key
    (outcome,) = gate_all([artifact], {key: validation}, {key: bench}, PipelineParams(), out / "gate")
    return outcome, baseline
