"""
### Retrain to deploy

Retrains the model on a schedule (the Keras digits classifier by default, or a team's own
trainer named `module:function`), saves it as a SavedModel and emits the Asset event
`model_exported` with the model's URI, framework, sha256, input specs and the compile params
to use. `compile_pipeline` is scheduled on that Asset, so every retrain is compiled,
validated, benchmarked and registered as a candidate; once a reviewer approves it (a copy in
`<model>.approved` with alias `champion`), `promote_model` ships it.

The schedule is a deployment setting: `RETRAIN_SCHEDULE` (cron, default weekly on Monday 03:00 UTC;
`none`: only when triggered). Unpausing it with a cron starts the latest interval's retrain at once.
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import Asset, Param, dag, get_current_context, task

from tasks.core.param_schema import field_schemas
from tasks.core.params import RetrainParams
from tasks.stages import MODEL_EXPORTED
from tasks.stages.retrain_to_deploy import train_and_export as stage

model_exported = Asset(MODEL_EXPORTED)
RETRAIN_SCHEDULE = os.environ.get("RETRAIN_SCHEDULE", "0 3 * * 1")


@dag(
    dag_id="retrain_to_deploy",
    schedule=None if RETRAIN_SCHEDULE.strip().lower() in ("", "none") else RETRAIN_SCHEDULE,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["train", "mlops"],
    default_args={"retries": 0},  # training is seeded and deterministic: a retry would fail the same way
    params={name: Param(**schema) for name, schema in field_schemas(RetrainParams).items()},
)
def retrain_to_deploy():
    @task(outlets=[model_exported])
    def train_and_export() -> dict:
        context = get_current_context()
        extra = stage.run(dict(context["params"]), context["run_id"])
        context["outlet_events"][model_exported].extra = extra  # one event per run, from this one task
        return extra

    train_and_export()


retrain_to_deploy()
