"""
### Promote model

Puts what a reviewer approved on S3 for serving. A reviewer approves a registered version of
`<model>` by copying it into registered model `<model>.approved` (which the pipeline can only read)
and moving alias `champion` there to the copy; a reviewer rejects one with tag `review=rejected`.

- **Scheduled** (every 10 minutes, and whenever `compile_pipeline` registers a version: Asset
  `model_registered`; no model given): promotes every `champion` that has not been promoted yet.
- **By hand**: `model_name` and `version` (a version number of `<model>` that was approved, or an
  alias of `<model>.approved`; default `champion`), or
  `rollback_to` (a committed serving version) to point serving back to it.

Each version is staged, checked object by object against its sha256, copied into
`s3://<bucket>/<prefix>/<model>/<N>/` in its serving runtime's layout (graph file last) and
committed by a `manifest.json` written only if absent. A smoke test then downloads it from S3 on a host of
the class the version's target runs on (its CPU, Neuron device or GPU: one chain of tasks per host class),
loads it with its runtime and compares predictions with validation; only then does the runtime's
pointer (`models.config`, `config.pbtxt` or `config.json`) move to it, beside Kubernetes manifests
in `k8s/<N>.yaml`. A rejected or gate-failed version is never promoted, whatever the trigger says, and
no approval is trusted before promotion has shown that its own MLflow login cannot write
`<model>.approved`.
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import Asset, AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, get_current_context, task

from tasks import targets
from tasks.core.param_schema import field_schemas
from tasks.core.params import PromoteParams
from tasks.stages import MODEL_REGISTERED
from tasks.stages import promote_model as stages
from tasks.stages.runner import NETWORK_RETRIES


@dag(
    dag_id="promote_model",
    # polls the registry every 10 minutes (PROMOTE_SCHEDULE), and runs at once when compile_pipeline registers a version
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable(os.environ.get("PROMOTE_SCHEDULE", "*/10 * * * *"), timezone="UTC"),
        assets=[Asset(MODEL_REGISTERED)],
    ),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,  # one promotion at a time per deployment; S3 claims keep concurrent ones apart anyway
    doc_md=__doc__,
    tags=["promote", "serving", "mlops"],
    default_args={"retries": 0},
    params={name: Param(**schema) for name, schema in field_schemas(PromoteParams).items()},
)
def promote_model():
    @task
    def find() -> list[dict]:
        return stages.find.run(dict(get_current_context()["params"]))

    @task(map_index_template="{{ request_name }}", **NETWORK_RETRIES)
    def promote(request: dict) -> dict:
        get_current_context()["request_name"] = stages.request_name(request)
        return stages.promote.run(request)

    # The requests of one host class, or a skip of its tasks (never queued where no worker may listen).
    @task.short_circuit(ignore_downstream_trigger_rules=False)
    def route(promoted: list[dict], host_class: str) -> list[dict]:
        return stages.for_host_class(list(promoted), host_class)

    @task(map_index_template="{{ request_name }}")
    def smoke_test(promoted: dict) -> dict:
        get_current_context()["request_name"] = stages.request_name(promoted)
        return stages.smoke_test.run(promoted)

    @task(map_index_template="{{ request_name }}", **NETWORK_RETRIES)
    def serve(smoked: dict) -> dict:
        get_current_context()["request_name"] = stages.request_name(smoked)
        return stages.serve.run(smoked)

    promoted = promote.expand(request=find())
    for host_class in targets.host_classes():
        requests = route.override(task_id=f"route_{host_class}")(promoted, host_class)
        smoked = smoke_test.override(task_id=f"smoke_test_{host_class}", queue=host_class).expand(promoted=requests)
        serve.override(task_id=f"serve_{host_class}").expand(smoked=smoked)


promote_model()
