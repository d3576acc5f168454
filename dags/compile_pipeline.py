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

The logic lives in the `tasks` package; this file only wires it. Every run writes
`report.json`, `report.md` and `report.html` (with benchmark plots), also logged to MLflow,
whether it succeeds or fails.
"""

from __future__ import annotations

from datetime import timedelta
from typing import get_args

import pendulum
from airflow.sdk import Asset, Param, dag, get_current_context, task

from tasks import pipeline, retrain
from tasks.export import SOURCE_MODULES
from tasks.models import ARCHITECTURES
from tasks.plan import KNOWN_PRECISIONS
from tasks.records import PipelineParams, Selection
from tasks.targets import names as target_names

DEFAULTS = PipelineParams()
NETWORK_RETRIES = {"retries": 3, "retry_delay": timedelta(seconds=5), "retry_exponential_backoff": True}
# Compile, validation and benchmark failures come back as failed configs, not as task failures: a task
# that fails there lost its worker (killed, machine gone, no heartbeat) and runs again on another one.
WORKER_LOSS_RETRIES = {"retries": 2, "retry_delay": timedelta(seconds=10)}


MODEL_EXPORTED = Asset(retrain.MODEL_EXPORTED)
MODEL_REGISTERED = Asset(retrain.MODEL_REGISTERED)


@dag(
    dag_id="compile_pipeline",
    schedule=[MODEL_EXPORTED],  # every retrain (retrain_to_deploy); and by hand from the trigger form
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    doc_md=__doc__,
    tags=["compile", "mlops"],
    default_args={"retries": 0},  # compile, validation and gate failures are deterministic
    params={
        "model_name": Param(DEFAULTS.model_name, type="string", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$",
                            title="Model name", description="Registered model name and S3 folder."),
        "model_uri": Param(DEFAULTS.model_uri, type="string", minLength=1, title="Model",
                           description="pytorch: a state dict (.pt/.pth, loaded weights-only) or module:pkg.mod:fn; "
                                       "torchscript: a .pt file; onnx: a .onnx file; tensorflow: a SavedModel dir; "
                                       "each a local path or an s3:// URI (a key, or a prefix for a directory); "
                                       "or a registered MLflow model in the ONNX flavor, models:/<name>/<version>. "
                                       "Built in: builtin:mobilenet_v2, builtin:text_encoder, builtin:keras_digits."),
        "trust_model_code": Param(DEFAULTS.trust_model_code, type="boolean", title="Trust code in the model file",
                                  description="Needed for TorchScript, whose file carries a program that runs with "
                                              "the model. Off: only weights and graphs are read."),
        "architecture": Param(DEFAULTS.architecture, enum=sorted(ARCHITECTURES), title="Architecture",
                              description="For a PyTorch state dict: the architecture to rebuild."),
        "framework": Param(DEFAULTS.framework, enum=list(SOURCE_MODULES), title="Framework"),
        "input_specs": Param(None, type=["null", "array"], title="Input specs",
                             items={"type": "object", "required": ["name", "shape", "dtype"]},
                             description='For formats that do not carry them, e.g. [{"name": "input", '
                                         '"shape": ["batch", 3, 224, 224], "dtype": "float32"}].'),
        "targets": Param(DEFAULTS.targets, type="array", minItems=1, items={"type": "string", "enum": target_names()},
                         title="Compile targets"),
        "precisions": Param(DEFAULTS.precisions, type="array", minItems=1,
                            items={"type": "string", "enum": list(KNOWN_PRECISIONS)}, title="Precisions",
                            description="Each target compiles the ones it supports."),
        "batch_sizes": Param(DEFAULTS.batch_sizes, type="array", minItems=1,
                             items={"type": "integer", "minimum": 1, "maximum": 1024}, title="Batch sizes",
                             description="The benchmark walks them up until throughput gains fall under 5 %; "
                                         "Neuron compiles one artifact per batch size."),
        "max_concurrency": Param(DEFAULTS.max_concurrency, type="integer", minimum=1, maximum=256,
                                 title="Most concurrent streams",
                                 description="The benchmark doubles the streams at the best batch while throughput "
                                             "still grows by 5 %, up to this."),
        "benchmark_window_s": Param(DEFAULTS.benchmark_window_s, type="number", exclusiveMinimum=0, maximum=60,
                                    title="Benchmark window (s)",
                                    description="Windows are repeated until 3 in a row agree within 10 %."),
        "selection": Param(DEFAULTS.selection, enum=list(get_args(Selection)), title="Selection strategy",
                           description="Which measured point of the gate-passing configs is registered."),
        "latency_budget_ms": Param(DEFAULTS.latency_budget_ms, type=["null", "number"], exclusiveMinimum=0,
                                   title="Latency budget (ms)",
                                   description="p99 per request, for max_throughput_under_latency."),
        "top5_tolerance_pp": Param(DEFAULTS.top5_tolerance_pp, type="number", minimum=0, maximum=100,
                                   title="Top-5 tolerance (pp)",
                                   description="Largest top-5 accuracy drop vs the CPU baseline that passes the gate."),
        "top1_tolerance_pp": Param(DEFAULTS.top1_tolerance_pp, type="number", minimum=0, maximum=100,
                                   title="Top-1 tolerance (pp)",
                                   description="Largest top-1 accuracy drop vs the CPU baseline that passes the gate."),
        "min_top5_agreement": Param(DEFAULTS.min_top5_agreement, type="number", minimum=0, maximum=1,
                                    title="Minimum top-5 agreement",
                                    description="Share of samples whose top-5 classes equal the baseline's."),
        "min_cosine": Param(DEFAULTS.min_cosine, type="number", minimum=-1, maximum=1, title="Minimum cosine",
                            description="For outputs that are not class scores: lowest per-sample cosine similarity "
                                        "to the baseline that passes the gate."),
        "atol": Param(DEFAULTS.atol, type="number", minimum=0, title="Absolute tolerance",
                      description="For outputs that are not class scores: every value must be within atol or "
                                  "within rtol (relative, |a-b| / (|b| + 1e-6)) of the baseline's."),
        "rtol": Param(DEFAULTS.rtol, type="number", minimum=0, title="Relative tolerance"),
        "dataset": Param(DEFAULTS.dataset, type="string", title="Validation data",
                         description="builtin:photos, builtin:digits, builtin:text, a .npz file (inputs, labels), "
                                     "or a directory of photos with labels.csv (file, label[, label ...])."),
        "compile_timeout_s": Param(DEFAULTS.compile_timeout_s, type="integer", minimum=1,
                                   title="Compile time limit (s)"),
        "compile_memory_mb": Param(DEFAULTS.compile_memory_mb, type="integer", minimum=256,
                                   title="Compile memory limit (MiB)"),
        "compile_cache": Param(DEFAULTS.compile_cache, type="boolean", title="Use the compile cache"),
    },
)  # fmt: skip
def compile_pipeline():
    @task
    def start() -> dict:
        context = get_current_context()
        params = dict(context["params"])
        events = (context.get("triggering_asset_events") or {}).get(MODEL_EXPORTED) or []
        if events:  # started by a retrain: its model, with the compile params it asked for
            params = retrain.params_from_event(params, events[-1].extra)
        return pipeline.start(params, context["run_id"])

    @task
    def export(ctx: dict) -> dict:
        return pipeline.export(ctx)

    @task
    def prepare_dataset(ctx: dict, exported: dict) -> dict:
        return pipeline.prepare_dataset(ctx, exported)

    # On the compile fleet: which targets can compile is judged where compiles run, not where plan happens to.
    @task(queue="compile")
    def plan(ctx: dict, exported: dict) -> list[dict]:
        return pipeline.plan(ctx, exported)

    # Compilers run on CPU workers (queue compile), at most pool compiler_slots at a time.
    @task(map_index_template="{{ config_key }}", queue="compile", pool="compiler_slots", **WORKER_LOSS_RETRIES)
    def compile_config(ctx: dict, exported: dict, dataset: dict, config: dict) -> dict:
        get_current_context()["config_key"] = pipeline.config_key(config)
        return pipeline.compile(ctx, exported, dataset, config)

    @task
    def baseline(ctx: dict, exported: dict, dataset: dict) -> dict:
        return pipeline.baseline(ctx, exported, dataset)

    # Validation and benchmarks run where the device is (queue accelerator: the Inferentia hosts).
    @task(map_index_template="{{ config_key }}", queue="accelerator", **WORKER_LOSS_RETRIES)
    def validate(ctx: dict, artifact: dict, dataset: dict, baseline: dict) -> dict:
        get_current_context()["config_key"] = pipeline.config_key(artifact["config"])
        return pipeline.validate(ctx, artifact, dataset, baseline)

    # One benchmark at a time: parallel benchmarks on one host would measure each other.
    @task(map_index_template="{{ config_key }}", queue="accelerator", max_active_tis_per_dag=1, **WORKER_LOSS_RETRIES)
    def benchmark(ctx: dict, artifact: dict, dataset: dict) -> dict:
        get_current_context()["config_key"] = pipeline.config_key(artifact["config"])
        return pipeline.benchmark(ctx, artifact, dataset)

    @task
    def gate(ctx: dict, artifacts: list[dict], validations: list[dict], benchmarks: list[dict]) -> list[dict]:
        return pipeline.gate(ctx, list(artifacts), list(validations), list(benchmarks))

    @task(**NETWORK_RETRIES)
    def record(ctx: dict, exported: dict, dataset: dict, baseline: dict, outcomes: list[dict]) -> dict:
        return pipeline.record(ctx, exported, dataset, baseline, outcomes)

    @task(outlets=[MODEL_REGISTERED], **NETWORK_RETRIES)
    def register(ctx: dict, exported: dict, dataset: dict, recorded: dict) -> dict:
        registration = pipeline.register(ctx, exported, dataset, recorded)
        get_current_context()["outlet_events"][MODEL_REGISTERED].extra = {
            k: registration[k] for k in ("registered_model", "version", "model_uri")
        }
        return registration

    @task(trigger_rule="all_done")
    def finalize() -> str:
        return pipeline.finalize(None, get_current_context()["run_id"])

    ctx = start()
    exported = export(ctx)
    dataset = prepare_dataset(ctx, exported)
    configs = plan(ctx, exported)
    compiled = compile_config.partial(ctx=ctx, exported=exported, dataset=dataset).expand(config=configs)
    reference = baseline(ctx, exported, dataset)
    validated = validate.partial(ctx=ctx, dataset=dataset, baseline=reference).expand(artifact=compiled)
    measured = benchmark.partial(ctx=ctx, dataset=dataset).expand(artifact=compiled)
    outcomes = gate(ctx, compiled, validated, measured)
    recorded = record(ctx, exported, dataset, reference, outcomes)
    registration = register(ctx, exported, dataset, recorded)
    everything = [ctx, exported, dataset, configs, compiled, reference, validated, measured, outcomes, recorded,
                  registration]  # fmt: skip
    everything >> finalize()


compile_pipeline()
