"""The MLflow client every stage and the reports page use, and the tags that tie MLflow to pipeline runs."""

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


def version_of_pipeline_run(registry, name: str, pipeline_run_id: str) -> str | None:
    """The version an earlier attempt of this pipeline run created, so a retry registers nothing twice.

    If a create request was retried after the server had already done it (a restart in between), there
    are two: the first is kept and the other deleted.
    """
    versions = sorted(
        int(v.version)
        for v in registry.search_model_versions(f"name = '{name}'")
        if v.tags.get(PIPELINE_RUN_TAG) == pipeline_run_id
    )
    for duplicate in versions[1:]:
        registry.delete_model_version(name, str(duplicate))
    return str(versions[0]) if versions else None
