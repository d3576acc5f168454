"""
### Retrain to deploy

Retrains the model on a schedule (the Keras digits classifier by default, or a team's own
trainer named `module:function`), saves it as a SavedModel and emits the Asset event
`model_exported` with the model's URI, framework, sha256, input specs and the compile params
to use. `compile_pipeline` is scheduled on that Asset, so every retrain is compiled,
validated, benchmarked and registered as a candidate; once a reviewer moves alias `champion`,
`promote_model` ships it.

The schedule is a deployment setting: `RETRAIN_SCHEDULE` (cron, default weekly on Monday 03:00 UTC).
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import Asset, Param, dag, get_current_context, task

from tasks import retrain

MODEL_EXPORTED = Asset(retrain.MODEL_EXPORTED)


@dag(
    dag_id="retrain_to_deploy",
    schedule=os.environ.get("RETRAIN_SCHEDULE", "0 3 * * 1"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["train", "mlops"],
    default_args={"retries": 0},  # training is seeded and deterministic: a retry would fail the same way
    params={
        "model_name": Param("keras-digits", type="string", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$",
                            title="Model name"),
        "training_callable": Param(retrain.BUILTIN_TRAINER, type="string", minLength=1, title="Trainer",
                                   description="builtin:keras_digits, or module:function called with an output "
                                               "directory and returning the SavedModel directory it wrote."),
        "compile_params": Param({"dataset": "builtin:digits", "targets": ["onnxruntime", "openvino", "neuron-inf1"],
                                 "batch_sizes": [1, 8, 32]}, type="object", title="Compile params",
                                description="compile_pipeline params for the runs this retrain triggers."),
    },
)  # fmt: skip
def retrain_to_deploy():
    @task(outlets=[MODEL_EXPORTED])
    def train_and_export() -> dict:
        context = get_current_context()
        extra = retrain.retrain(dict(context["params"]), context["run_id"])
        context["outlet_events"][MODEL_EXPORTED].extra = extra  # one event per run, from this one task
        return extra

    train_and_export()


retrain_to_deploy()
