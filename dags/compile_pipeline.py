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
- validates each config against the source framework on CPU on the same samples
  (top-1, top-5, top-5 agreement for classifiers; cosine, atol/rtol for any output)
  and benchmarks it beside the baseline with one harness (batch size and concurrent streams
  swept until throughput stops growing, windows repeated until they agree);
- gates with a Great Expectations suite over the per-config metrics (top-1/top-5 deltas,
  top-5 agreement, no NaN/Inf, cosine and atol/rtol for other outputs), records everything
  and the suite's Data Docs in MLflow, registers the point the `selection` strategy picks
  (default: the fastest passing config) with alias `candidate` and a description a reviewer
  decides from. Nothing goes to S3 here: a reviewer moves alias `champion` to a version and
  the `promote_model` DAG promotes it.

The logic lives in `tasks/stages/compile_pipeline/`, one module per task; this file only wires it. Every run writes
`report.json`, `report.md` and `report.html` (with benchmark plots), also logged to MLflow,
whether it succeeds or fails.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Asset, Param, dag, get_current_context, task

from tasks.stages import MODEL_EXPORTED, MODEL_REGISTERED
from tasks.stages import compile_pipeline as stages
from tasks.stages.runner import NETWORK_RETRIES, WORKER_LOSS_RETRIES

model_exported, model_registered = Asset(MODEL_EXPORTED), Asset(MODEL_REGISTERED)


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

    # On the compile fleet: which targets can compile is judged where compiles run, not where plan happens to.
    @task(queue="compile")
    def plan(ctx: dict, exported: dict) -> list[dict]:
        planned = stages.plan.run(ctx, exported)
        # mapping needs the configs as the return value; the skipped targets travel beside them, to record
        get_current_context()["ti"].xcom_push(key="skipped", value=planned["skipped"])
        return planned["configs"]

    # Compilers run on CPU workers (queue compile), at most pool compiler_slots at a time.
    @task(map_index_template="{{ config_key }}", queue="compile", pool="compiler_slots", **WORKER_LOSS_RETRIES)
    def compile_config(ctx: dict, exported: dict, dataset: dict, config: dict) -> dict:
        get_current_context()["config_key"] = stages.compile_config.config_key(config)
        return stages.compile_config.run(ctx, exported, dataset, config)

    @task
    def baseline(ctx: dict, exported: dict, dataset: dict) -> dict:
        return stages.baseline.run(ctx, exported, dataset)

    # Validation and benchmarks run where the device is (queue accelerator: the Inferentia hosts).
    @task(map_index_template="{{ config_key }}", queue="accelerator", **WORKER_LOSS_RETRIES)
    def validate(ctx: dict, artifact: dict, dataset: dict, baseline: dict) -> dict:
        get_current_context()["config_key"] = stages.compile_config.config_key(artifact["config"])
        return stages.validate.run(ctx, artifact, dataset, baseline)

    # One benchmark at a time: parallel benchmarks on one host would measure each other.
    @task(map_index_template="{{ config_key }}", queue="accelerator", max_active_tis_per_dag=1, **WORKER_LOSS_RETRIES)
    def benchmark(ctx: dict, artifact: dict, dataset: dict) -> dict:
        get_current_context()["config_key"] = stages.compile_config.config_key(artifact["config"])
        return stages.benchmark.run(ctx, artifact, dataset)

    @task
    def gate(ctx: dict, artifacts: list[dict], validations: list[dict], benchmarks: list[dict]) -> list[dict]:
        return stages.gate.run(ctx, list(artifacts), list(validations), list(benchmarks))

    @task(**NETWORK_RETRIES)
    def record(ctx: dict, exported: dict, dataset: dict, baseline: dict, skipped: list, outcomes: list[dict]) -> dict:
        return stages.record.run(ctx, exported, dataset, baseline, skipped, outcomes)

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
    compiled = compile_config.partial(ctx=ctx, exported=exported, dataset=dataset).expand(config=planned)
    reference = baseline(ctx, exported, dataset)
    validated = validate.partial(ctx=ctx, dataset=dataset, baseline=reference).expand(artifact=compiled)
    measured = benchmark.partial(ctx=ctx, dataset=dataset).expand(artifact=compiled)
    # Measured on a quiet host, as a careful engineer measures: the baseline's sweep once every compiler is done,
    # the configs' once every validation is (where one host runs them all, a compile or validation beside a sweep
    # takes its cores: the demo's baseline measured 29 samples/s beside NNCF's quantiser, 44 to 57 alone).
    compiled >> reference
    validated >> measured
    outcomes = gate(ctx, compiled, validated, measured)
    recorded = record(ctx, exported, dataset, reference, planned["skipped"], outcomes)
    registration = register(ctx, exported, dataset, recorded)
    everything = [ctx, exported, dataset, planned, compiled, reference, validated, measured, outcomes, recorded,
                  registration]  # fmt: skip
    everything >> finalize()


compile_pipeline()
