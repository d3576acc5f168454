"""
### Compile pipeline

Takes one trained model through **export → compile → validate → benchmark → gate →
record → register**:

- exports the model (PyTorch state dict or `module:callable`, TorchScript, ONNX, or a
  TensorFlow/Keras SavedModel) to the formats targets start from, with its input specs;
- compiles it for every available target × precision (one mapped task per config,
  named like `openvino-bf16`), from the content-addressed compile cache when it can,
  otherwise in a child process with time and memory limits; unavailable targets
  (Neuron without its SDK, TensorRT without a GPU) are skipped with their reason;
- validates each config against the source framework on the CPU of the same host class
  (top-1, top-5, top-5 agreement for classifiers; cosine, atol/rtol for any output)
  and benchmarks it beside that class's baseline with one harness (batch size and concurrent
  streams swept until throughput stops growing, windows repeated until they agree), one sweep
  at a time per host;
- gates with a Great Expectations suite over the per-config metrics (top-1/top-5 deltas,
  top-5 agreement, no NaN/Inf, cosine and atol/rtol for other outputs), records everything
  and the suite's Data Docs in MLflow, registers the point the `selection` strategy picks
  (default: the fastest passing config) with alias `candidate` and a description a reviewer
  decides from. Nothing goes to S3 here: a reviewer approves a version (copies it into
  `<model>.approved`, alias `champion`) and the `promote_model` DAG promotes it.

Where each task runs is a fact of its target: configs are grouped by host class (the target's
run queue: `cpu`, `inf1`, `inf2`, `gpu`), each class with its own compile, baseline, validate and
benchmark tasks on its own queues; a class with no configs is skipped. Stages hand each other
store URIs and sha256 (the run store, `RUN_STORE_URI`), never a host's path.

The logic lives in `tasks/stages/compile_pipeline/`, one module per task; this file only wires it. Every run writes
`report.json`, `report.md` and `report.html` (with benchmark plots) to the run store, also logged to MLflow,
whether it succeeds or fails.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Asset, Param, dag, get_current_context, task

from tasks import targets
from tasks.stages import MODEL_EXPORTED, MODEL_REGISTERED
from tasks.stages import compile_pipeline as stages
from tasks.stages.runner import NETWORK_RETRIES, WORKER_LOSS_RETRIES

model_exported, model_registered = Asset(MODEL_EXPORTED), Asset(MODEL_REGISTERED)
HOST_CLASSES = targets.host_classes()  # host class (its run queue) -> the queue its targets compile on


@dag(
    dag_id="compile_pipeline",
    schedule=[model_exported],  # every retrain (retrain_to_deploy); and by hand from the trigger form
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    doc_md=__doc__,
    tags=["compile", "mlops"],
    default_args={"retries": 0},  # compile, validation and gate failures are deterministic
    params={name: Param(**schema) for name, schema in stages.start.param_schemas().items()},
)
def compile_pipeline():
    @task
    def start() -> dict:
        context = get_current_context()
        params = dict(context["params"])
        events = (context.get("triggering_asset_events") or {}).get(model_exported) or []
        if events:  # started by a retrain: its model, with the compile params it asked for
            params = stages.start.params_from_event(params, events[-1].extra)
        return stages.start.run(params, context["run_id"])

    @task
    def export(ctx: dict) -> dict:
        return stages.export.run(ctx)

    @task
    def prepare_dataset(ctx: dict, exported: dict) -> dict:
        return stages.prepare_dataset.run(ctx, exported)

    # On the compile fleet: which targets can compile is judged where compiles run.
    @task(queue=targets.PLAN_QUEUE)
    def plan(ctx: dict, exported: dict) -> dict:
        return stages.plan.run(ctx, exported)

    # A host class's configs, or a skip of its own tasks (never queued where no worker may listen); the tasks
    # after them still run.
    @task.short_circuit(ignore_downstream_trigger_rules=False)
    def route(planned: dict, host_class: str) -> list[dict]:
        return stages.plan.for_host_class(planned, host_class)

    # Compilers run on their class's compile queue, at most pool compiler_slots at a time.
    @task(map_index_template="{{ config_key }}", pool="compiler_slots", **WORKER_LOSS_RETRIES)
    def compile_config(ctx: dict, exported: dict, dataset: dict, config: dict) -> dict:
        get_current_context()["config_key"] = stages.compile_config.config_key(config)
        return stages.compile_config.run(ctx, exported, dataset, config)

    @task(**WORKER_LOSS_RETRIES)
    def baseline(ctx: dict, exported: dict, dataset: dict, host_class: str) -> dict:
        return stages.baseline.run(ctx, exported, dataset, host_class)

    @task(map_index_template="{{ config_key }}", **WORKER_LOSS_RETRIES)
    def validate(ctx: dict, artifact: dict, dataset: dict, baseline: dict) -> dict:
        get_current_context()["config_key"] = stages.compile_config.config_key(artifact["config"])
        return stages.validate.run(ctx, artifact, dataset, baseline)

    @task(map_index_template="{{ config_key }}", **WORKER_LOSS_RETRIES)
    def benchmark(ctx: dict, artifact: dict, dataset: dict) -> dict:
        get_current_context()["config_key"] = stages.compile_config.config_key(artifact["config"])
        return stages.benchmark.run(ctx, artifact, dataset)

    # Host classes without configs skip their tasks, so the gate runs when none failed.
    @task(trigger_rule="none_failed")
    def gate(ctx: dict, artifacts: list[dict], validations: list[dict], benchmarks: list[dict]) -> dict:
        return stages.gate.run(ctx, list(artifacts), list(validations), list(benchmarks))

    @task(trigger_rule="none_failed", **NETWORK_RETRIES)
    def record(ctx: dict, exported: dict, dataset: dict, planned: dict, baselines: list, gated: dict) -> dict:
        # a skipped host class's baseline is None
        measured_baselines = [b for b in baselines if b]
        return stages.record.run(ctx, exported, dataset, measured_baselines, planned["skipped"], gated)

    @task(outlets=[model_registered], **NETWORK_RETRIES)
    def register(ctx: dict, exported: dict, dataset: dict, recorded: dict) -> dict:
        registration = stages.register.run(ctx, exported, dataset, recorded)
        get_current_context()["outlet_events"][model_registered].extra = {
            k: registration[k] for k in ("registered_model", "version", "model_uri")
        }
        return registration

    @task(trigger_rule="all_done")
    def finalize() -> str:
        return stages.finalize.run(get_current_context()["run_id"])

    ctx = start()
    exported = export(ctx)
    dataset = prepare_dataset(ctx, exported)
    planned = plan(ctx, exported)
    compiled, references, validated, measured = [], [], [], []
    # One chain per host class: compiles on its compile queue; baseline, validation and benchmarks on its hosts.
    for host_class, compile_queue in HOST_CLASSES.items():
        configs = route.override(task_id=f"route_{host_class}")(planned, host_class)
        class_compiled = (
            compile_config.override(task_id=f"compile_config_{host_class}", queue=compile_queue)
            .partial(ctx=ctx, exported=exported, dataset=dataset)
            .expand(config=configs)
        )
        reference = baseline.override(task_id=f"baseline_{host_class}", queue=host_class)(
            ctx, exported, dataset, host_class
        )
        class_validated = (
            validate.override(task_id=f"validate_{host_class}", queue=host_class)
            .partial(ctx=ctx, dataset=dataset, baseline=reference)
            .expand(artifact=class_compiled)
        )
        class_measured = (
            benchmark.override(task_id=f"benchmark_{host_class}", queue=host_class)
            .partial(ctx=ctx, dataset=dataset)
            .expand(artifact=class_compiled)
        )
        # Measured on a quiet host, as a careful engineer measures: the baseline's sweep once the class's compiles
        # are done, the configs' once its validations are (where one machine runs it all, a compile beside a sweep
        # takes its cores, and the figure measures the compiler as much as the model).
        configs >> reference
        class_compiled >> reference
        class_validated >> class_measured
        compiled.append(class_compiled)
        references.append(reference)
        validated.append(class_validated)
        measured.append(class_measured)
    gated = gate(
        ctx, compiled[0].concat(*compiled[1:]), validated[0].concat(*validated[1:]), measured[0].concat(*measured[1:])
    )
    recorded = record(ctx, exported, dataset, planned, references, gated)
    registration = register(ctx, exported, dataset, recorded)
    everything = [ctx, exported, dataset, planned, *compiled, *references, *validated, *measured, gated, recorded,
                  registration]  # fmt: skip
    everything >> finalize()


compile_pipeline()
