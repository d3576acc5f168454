"""The reports page's data: pipeline runs from MLflow, newest first."""

import mlflow
import pytest

from tasks.core.mlflow_client import PIPELINE_RUN_TAG, client, experiment_id_of
from tasks.report.page import collect


@pytest.mark.integration
def test_a_run_without_a_report_is_left_out_without_asking_mlflow_for_it(local_services, monkeypatch):
    """Asking MLflow for a missing artifact is a server error it retries with backoff for minutes: the page
    looks first (a run still in progress, or stopped before finalize, has no report.json)."""
    tracking = client(local_services)
    run = tracking.create_run(experiment_id_of(local_services), tags={PIPELINE_RUN_TAG: "no-report-yet"})
    tracking.set_terminated(run.info.run_id)
    asked = []
    download = mlflow.MlflowClient.download_artifacts
    monkeypatch.setattr(
        mlflow.MlflowClient,
        "download_artifacts",
        lambda self, run_id, path, dst=None: asked.append(run_id) or download(self, run_id, path, dst),
    )
    rows = collect(local_services)
    assert run.info.run_id not in {row["mlflow_run_id"] for row in rows}
    assert run.info.run_id not in asked
