"""The MLflow client every stage and the reports page use, the links into its UI, and the tags and aliases that tie
MLflow to pipeline runs."""

from __future__ import annotations

import os

from tasks.core.settings import MLFLOW_CLIENT_ENV, Settings

PIPELINE_RUN_TAG = "pipeline_run_id"  # on the parent run and on the registered version a pipeline run made
CANDIDATE_ALIAS = "candidate"  # set by compile_pipeline's register task
CHAMPION_ALIAS = "champion"  # moved by a reviewer; what promote_model ships


# mlflow is imported inside functions: it is heavy (about 2 s), and DAG parsing and the compile workers never need it.
def client(settings: Settings):
    """An MLflow client for the tracking server; also points the fluent API (mlflow.*) at it."""
    import mlflow

    for name, value in MLFLOW_CLIENT_ENV.items():
        os.environ.setdefault(name, value)
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    return mlflow.MlflowClient(settings.mlflow_tracking_uri)


def run_url(settings: Settings, experiment_id: str, run_id: str, path: str = "") -> str:
    """A run's page in the MLflow UI, or one of its artifacts there."""
    url = f"{settings.mlflow_tracking_uri}/#/experiments/{experiment_id}/runs/{run_id}"
    return url + (f"/artifacts/{path}" if path else "")


def experiment_id_of(settings: Settings) -> str:
    import mlflow

    return mlflow.set_experiment(settings.experiment).experiment_id


def delete_pipeline_runs(registry, experiment_id: str, pipeline_run_id: str) -> None:
    """Delete the runs (a parent tagged with the pipeline run, and its children) an interrupted attempt of a stage
    logged, so a retry logs them whole, once."""
    parents = registry.search_runs([experiment_id], filter_string=f"tags.{PIPELINE_RUN_TAG} = '{pipeline_run_id}'")
    for parent in parents:
        children = registry.search_runs(
            [experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
        )
        for run in [*children, parent]:
            registry.delete_run(run.info.run_id)
