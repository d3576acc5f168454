"""Registered model versions as a pipeline run makes them: created once per pipeline run (a retry finds the one an
earlier attempt made), then tagged, described and given an alias. Which tags and what description is the
``register`` stage's choice (:mod:`tasks.stages.compile_pipeline.register`); writing them is done here."""

from __future__ import annotations

from tasks.core.settings import Settings
from tasks.registry.client import PIPELINE_RUN_TAG, client
from tasks.registry.review import prepare_approved_model

# Heavy, so imported inside the functions that need them (DAG parsing and most tasks never do): mlflow.


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


def register_version(settings: Settings, name: str, model_uri: str, pipeline_run_id: str) -> str:
    """A new version of registered model ``name`` from the logged model ``model_uri``; its number.

    Before the first version, ``<name>.approved`` is created and put out of the pipeline's hands
    (:func:`tasks.registry.review.prepare_approved_model`). The pipeline-run tag is set as the version is
    created, so a retry finds it (:func:`version_of_pipeline_run`).
    """
    import mlflow

    prepare_approved_model(settings, name)
    mlflow.register_model(model_uri, name, tags={PIPELINE_RUN_TAG: pipeline_run_id})
    version = version_of_pipeline_run(client(settings), name, pipeline_run_id)
    if version is None:
        raise RuntimeError(f"MLflow registered {model_uri} as a version of {name}, but no version carries its tag")
    return version


def label_version(
    settings: Settings, name: str, version: str, tags: dict[str, str], description: str, alias: str
) -> None:
    """Set ``tags`` on a version, its ``description`` (what a reviewer decides from), and move ``alias`` to it."""
    registry = client(settings)
    for key, value in tags.items():
        registry.set_model_version_tag(name, version, key, value)
    registry.update_model_version(name, version, description=description)
    registry.set_registered_model_alias(name, alias, version)
