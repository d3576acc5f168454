"""MLflow with its basic-auth app, configured as the deployments ship it (docker/mlflow/basic_auth.ini):
no login moves nothing, the pipeline's own user registers, only a reviewer approves, and the pipeline's login
can neither approve nor change an approval."""

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
from tasks.core import settings as settings_module
from tasks.core.params import PipelineParams
from tasks.core.records import RunContext
from tasks.core.settings import PROJECT_ROOT
from tasks.registry import review
from tasks.serving.store import PromotionError, Store
from tasks.stages.compile_pipeline.record import record
from tasks.stages.compile_pipeline.register import register
from tasks.stages.promote_model import find, promote
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
            [sys.executable, "-m", "tasks.registry.access"],
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
    # as a deployment with logins runs: approval required (the local services' own setting is "convention")
    settings = dataclasses.replace(local_services, mlflow_tracking_uri=auth_mlflow, approval_control="required")
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
        with pytest.raises(MlflowException, match=code):  # nor approve it
            review.approve(settings, model.name, version)
        reliability.anonymous_refused += 3
    _as(monkeypatch, None)
    with pytest.raises(MlflowException, match="401"):  # without a login nothing is readable either
        mlflow.MlflowClient(auth_mlflow).get_registered_model(model.name)
    _as(monkeypatch, PIPELINE)
    assert "champion" not in mlflow.MlflowClient(auth_mlflow).get_registered_model(model.name).aliases

    _as(monkeypatch, ("alice", REVIEWERS["alice"]))  # a reviewer approves: a copy in <model>.approved
    copy = review.approve(settings, model.name, version)
    assert copy.name == review.approved_model(model.name) and copy.tags["artifact_sha256"]

    # approval is a control: the pipeline's login can neither approve nor change an approval
    _as(monkeypatch, PIPELINE)
    registry = mlflow.MlflowClient(auth_mlflow)
    writes = {
        "move champion": lambda: registry.set_registered_model_alias(copy.name, "champion", copy.version),
        "approve a version": lambda: registry.copy_model_version(f"models:/{model.name}/{version}", copy.name),
        "change the recorded sha256": lambda: registry.set_model_version_tag(
            copy.name, copy.version, "artifact_sha256", "0" * 64
        ),
        "delete the approved model": lambda: registry.delete_registered_model(copy.name),
    }
    for what, write in writes.items():
        with pytest.raises(MlflowException, match="403"):
            write()
            pytest.fail(f"the pipeline's login could {what}")
        reliability.anonymous_refused += 1
    # and promotion, as the pipeline, proves that before it finds the approved version
    approval = review.approved(settings, model.name, "champion")
    assert approval.source.version == version and approval.control == "enforced"


@pytest.mark.reliability
def test_an_approved_model_the_pipeline_can_write_is_refused_and_nothing_is_committed(
    auth_mlflow, local_services, exported, dataset_ref, compiled_outcome, monkeypatch, reliability
):
    """An admin who puts the pipeline's user among the reviewers makes its credentials able to approve: promotion
    then refuses every approval by name and writes nothing, until that is undone."""
    settings = dataclasses.replace(local_services, mlflow_tracking_uri=auth_mlflow, approval_control="required")
    outcome, baseline = compiled_outcome
    model = exported.model_copy(update={"name": "self-approved"})
    _as(monkeypatch, PIPELINE)
    ctx = RunContext(run_id="access-b", run_uri=run_uri_for("access-b"), params=PipelineParams())
    parent, recorded = record(settings, ctx, model, dataset_ref, [baseline], [outcome], {})
    version = register(settings, ctx, model, recorded[0], dataset=dataset_ref, parent_run_id=parent).version
    with pytest.raises(MlflowException, match="403"):  # handed over at registration: the pipeline cannot approve
        review.approve(settings, model.name, version)

    _as(monkeypatch, ADMIN)
    admin = get_app_client("basic-auth", tracking_uri=auth_mlflow)
    role = next(r for r in admin.list_roles("default") if r.name == "reviewers")
    admin.assign_role(PIPELINE[0], role.id)  # the misconfiguration
    try:
        _as(monkeypatch, PIPELINE)
        review.approve(settings, model.name, version)  # now it can, so its approval is no control
        monkeypatch.setenv("MLFLOW_TRACKING_URI", auth_mlflow)
        monkeypatch.setenv("APPROVAL_CONTROL", "required")
        monkeypatch.setenv("SERVING_PREFIX", "self-approved-test")
        reliability.bad_inputs += 1
        refused = "the pipeline's MLflow login can write registered model 'self-approved.approved'"
        with pytest.raises(PromotionError, match=refused):
            find.run({"model_name": model.name})
        with pytest.raises(PromotionError, match=refused):
            promote.run({"model": model.name, "registry_version": version})
        assert not list(Store(settings_module.load(), model.name).keys(""))
    finally:
        _as(monkeypatch, ADMIN)
        admin.unassign_role(PIPELINE[0], role.id)
