"""MLflow with its basic-auth app, configured as the deployments ship it (docker/mlflow/basic_auth.ini):
no login moves nothing, the pipeline's own user registers, only a reviewer approves."""

import configparser
import dataclasses
import json
import os
import subprocess
import sys

import mlflow
import pytest
from conftest import free_port
from mlflow.exceptions import MlflowException
from mlflow.server import get_app_client

from devtools.services import stop_child, wait_until_answering
from tasks.core.records import PipelineParams, RunContext
from tasks.core.settings import PROJECT_ROOT
from tasks.serving import review
from tasks.stages.compile_pipeline.record import record
from tasks.stages.compile_pipeline.register import register
from tasks.stages.runner import run_uri_for

pytestmark = pytest.mark.integration

ADMIN = ("admin", "admin-password-for-the-test")
PIPELINE = ("pipeline", "pipeline-password-1")
REVIEWERS = {"alice": "alice-password-1"}
SOMEONE = ("someone", "someone-password-1")  # has a login, no role


@pytest.fixture(scope="module")
def auth_mlflow(tmp_path_factory):
    """An MLflow server with --app-name basic-auth and the shipped auth config (users' store moved to a temp dir)."""
    home = tmp_path_factory.mktemp("mlflow-auth")
    config = configparser.ConfigParser()
    config.read(PROJECT_ROOT / "docker" / "mlflow" / "basic_auth.ini")
    config["mlflow"]["database_uri"] = f"sqlite:///{home / 'basic_auth.db'}"
    with (home / "basic_auth.ini").open("w") as out:
        config.write(out)
    port = free_port()
    env = {**os.environ, "MLFLOW_AUTH_CONFIG_PATH": str(home / "basic_auth.ini"),
           "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN[1], "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-secret-key"}  # fmt: skip
    log = home / "mlflow.log"
    server = subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "mlflow"), "server", "--app-name", "basic-auth",
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{home / 'mlflow.db'}", "--artifacts-destination", str(home / "artifacts")],
        env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_answering("mlflow (basic-auth)", server, f"{url}/health", log, 180)
        (home / "reviewers.json").write_text(json.dumps(REVIEWERS))
        users = subprocess.run(
            [sys.executable, "-m", "tasks.serving.registry_access"],
            env={**os.environ, "MLFLOW_TRACKING_URI": url, "MLFLOW_TRACKING_USERNAME": ADMIN[0],
                 "MLFLOW_TRACKING_PASSWORD": ADMIN[1], "MLFLOW_PIPELINE_USERNAME": PIPELINE[0],
                 "MLFLOW_PIPELINE_PASSWORD": PIPELINE[1], "MLFLOW_REVIEWERS_FILE": str(home / "reviewers.json")},
            capture_output=True, text=True, timeout=120, cwd=PROJECT_ROOT,
        )  # fmt: skip
        assert users.returncode == 0, users.stdout + users.stderr
        os.environ.update(MLFLOW_TRACKING_USERNAME=ADMIN[0], MLFLOW_TRACKING_PASSWORD=ADMIN[1])
        try:
            get_app_client("basic-auth", tracking_uri=url).create_user(*SOMEONE)
        finally:
            for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
                os.environ.pop(name)
        yield url
    finally:
        stop_child(server)


def _as(monkeypatch, login: tuple[str, str] | None) -> None:
    for name, value in zip(
        ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"), login or (None, None), strict=True
    ):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)


@pytest.mark.reliability
def test_only_a_reviewer_approves_and_the_pipeline_still_registers(
    auth_mlflow, local_services, exported, dataset_ref, compiled_outcome, monkeypatch, reliability
):
    settings = dataclasses.replace(local_services, mlflow_tracking_uri=auth_mlflow)
    outcome, baseline = compiled_outcome
    model = exported.model_copy(update={"name": "access-test"})
    _as(monkeypatch, PIPELINE)  # the pipeline's tasks run with its own login
    ctx = RunContext(run_id="access-a", run_uri=run_uri_for("access-a"), params=PipelineParams())
    parent, recorded = record(settings, ctx, model, dataset_ref, [baseline], [outcome], {})
    version = register(settings, ctx, model, recorded[0], dataset=dataset_ref, parent_run_id=parent).version
    assert mlflow.MlflowClient(auth_mlflow).get_model_version_by_alias(model.name, "candidate").version == version

    refusals = {None: "401", SOMEONE: "403"}  # no login; a login without the reviewers' role
    for login, code in refusals.items():
        _as(monkeypatch, login)
        with pytest.raises(MlflowException, match=code):
            mlflow.MlflowClient(auth_mlflow).set_registered_model_alias(model.name, "champion", version)
        with pytest.raises(MlflowException, match=code):
            mlflow.MlflowClient(auth_mlflow).set_model_version_tag(model.name, version, "review", "approved")
        reliability.anonymous_refused += 2
    _as(monkeypatch, None)
    with pytest.raises(MlflowException, match="401"):  # without a login nothing is readable either
        mlflow.MlflowClient(auth_mlflow).get_registered_model(model.name)
    _as(monkeypatch, PIPELINE)
    assert "champion" not in mlflow.MlflowClient(auth_mlflow).get_registered_model(model.name).aliases

    _as(monkeypatch, ("alice", REVIEWERS["alice"]))  # a reviewer approves
    mlflow.MlflowClient(auth_mlflow).set_registered_model_alias(model.name, "champion", version)
    _as(monkeypatch, PIPELINE)  # and promotion, as the pipeline, finds the approved version
    assert review.resolve(settings, model.name, "champion").version == version
