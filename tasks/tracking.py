"""Record and register stages: MLflow runs per config under one parent run, and the registered candidate."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from tasks.files import local_path
from tasks.gate import RUN_SUBDIR, gate_dir
from tasks.records import (
    BaselineResult,
    BenchmarkPoint,
    ConfigOutcome,
    DatasetRef,
    ExportedModel,
    Registration,
    RunContext,
)
from tasks.settings import MLFLOW_CLIENT_ENV, PROJECT_ROOT, Settings

PIPELINE_RUN_TAG = "pipeline_run_id"
GATE_PARAMS = ("top5_tolerance_pp", "top1_tolerance_pp", "min_top5_agreement", "min_cosine", "atol", "rtol")
CANDIDATE_ALIAS = "candidate"
# What the registered pyfunc needs at serving time, per target.
RUNTIME_REQUIREMENTS = {
    "onnxruntime": ["onnxruntime"],
    "openvino": ["openvino"],
    "inductor": ["torch"],
    "tensorrt": ["tensorrt", "torch"],
    "neuron-inf1": ["tensorflow-neuron", "torch-neuron"],
    "neuron-inf2": ["torch-neuronx"],
}


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


def _experiment_id(settings: Settings) -> str:
    import mlflow

    return mlflow.set_experiment(settings.experiment).experiment_id


def record(
    settings: Settings,
    ctx: RunContext,
    exported: ExportedModel,
    dataset: DatasetRef,
    baseline: BaselineResult,
    outcomes: list[ConfigOutcome],
    skipped: dict[str, str],
) -> tuple[str, list[ConfigOutcome]]:
    """Log the pipeline run and one child run per config; returns the parent run id and outcomes with run ids."""
    import mlflow

    registry = client(settings)
    experiment_id = _experiment_id(settings)
    if _version_of_run(registry, exported.name, ctx.run_id) is None:  # a registered version keeps its runs
        _drop_earlier_attempt(registry, experiment_id, ctx.run_id)
    params = ctx.params
    recorded = []
    with mlflow.start_run(
        experiment_id=experiment_id, run_name=f"{exported.name} {ctx.run_id}", tags={PIPELINE_RUN_TAG: ctx.run_id}
    ) as parent:
        mlflow.log_params(
            {
                "model_name": exported.name,
                "model_uri": exported.source_uri,
                "source_sha256": exported.source_sha256,
                "exporter": ", ".join(f"{name} {value[:12]}" for name, value in exported.exporter.items() if value),
                "architecture": exported.architecture,
                "framework": exported.framework,
                "model_code": exported.model_code or "none (weights only)",
                "parameters": exported.parameters,
                "targets": ",".join(params.targets),
                "precisions": ",".join(params.precisions),
                "batch_sizes": ",".join(map(str, params.batch_sizes)),
                **{name: getattr(params, name) for name in GATE_PARAMS},
                "dataset": params.dataset,
                "dataset_sha256": dataset.sha256,
                "dataset_samples": dataset.samples,
            }
        )
        best_base = baseline.benchmark.best
        mlflow.log_metrics(
            {
                "baseline_top1": baseline.predictions.top1,
                "baseline_top5": baseline.predictions.top5,
                "baseline_throughput": best_base.throughput if best_base else 0.0,
            }
        )
        for name, why in skipped.items():
            mlflow.set_tag(f"skipped.{name}", why[:5000])
        gx_dir = gate_dir(ctx.run_dir)
        if gx_dir.is_dir():  # the GX suite's validation result and its Data Docs site
            mlflow.log_artifacts(str(gx_dir), artifact_path=RUN_SUBDIR)
        for outcome in outcomes:
            recorded.append(
                outcome.model_copy(update={"mlflow_run_id": _record_config(experiment_id, parent, outcome)})
            )
    return parent.info.run_id, recorded


def _drop_earlier_attempt(registry, experiment_id: str, pipeline_run_id: str) -> None:
    """Delete the runs an interrupted attempt of this stage logged (a retry logs them whole, once)."""
    parents = registry.search_runs([experiment_id], filter_string=f"tags.{PIPELINE_RUN_TAG} = '{pipeline_run_id}'")
    for parent in parents:
        children = registry.search_runs(
            [experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
        )
        for run in [*children, parent]:
            registry.delete_run(run.info.run_id)


def _record_config(experiment_id: str, parent, outcome: ConfigOutcome) -> str:
    import mlflow

    compiled, validation, bench = outcome.compiled, outcome.validation, outcome.benchmark
    config = compiled.config
    with mlflow.start_run(
        experiment_id=experiment_id, run_name=config.key, nested=True, parent_run_id=parent.info.run_id
    ) as run:
        mlflow.log_params(
            {
                "target": config.target,
                "precision": config.precision,
                "batch_size": config.batch_size or "dynamic",
                "compiler": compiled.compiler,
                "compiler_version": compiled.compiler_version,
                "compiler_flags": " ".join(compiled.report.flags if compiled.report else [])[:500],
                "artifact_sha256": compiled.sha256,
                "compile_cache_key": compiled.cache_key,
            }
        )
        mlflow.set_tags(
            {
                "gate": outcome.gate,
                "gate_reasons": "; ".join(outcome.gate_reasons)[:5000],
                "compile_status": compiled.status,
                "compile_cache": compiled.cache,
            }
        )
        metrics = {
            "compile_seconds": compiled.compile_seconds,
            "compile_stage_seconds": compiled.stage_seconds,
            "compile_peak_memory_mb": compiled.peak_memory_mb,
            "compile_cache_hit": 1.0 if compiled.cache == "hit" else 0.0,
        }
        report = compiled.report
        if report and report.operators_total:
            metrics |= {
                "operators_total": report.operators_total,
                "operators_on_device": report.operators_on_device or 0,
            }
            if report.on_device_share is not None:
                metrics["operators_on_device_share"] = report.on_device_share
        if validation and validation.status == "ok":
            predictions = validation.predictions
            candidates = {
                "top1": predictions.top1 if predictions else None,
                "top5": predictions.top5 if predictions else None,
                "top1_delta_pp": validation.top1_delta,
                "top5_delta_pp": validation.top5_delta,
                "top5_agreement": validation.top5_agreement,
                "cosine_min": validation.cosine_min,
                "max_abs_diff": validation.max_abs_diff,
                "max_rel_diff": validation.max_rel_diff,
                "out_of_tolerance": validation.out_of_tolerance,
                "nonfinite_outputs": validation.nonfinite_outputs,
            }
            metrics |= {k: v for k, v in candidates.items() if v is not None}  # top-k only for labelled data
        if bench and bench.best:
            metrics |= {
                "throughput": bench.best.throughput,
                "best_batch_size": bench.best.batch_size,
                "best_concurrency": bench.best.concurrency,
                "best_copies": bench.best.copies,
                "latency_ms_p50": bench.best.latency_ms_p50,
                "latency_ms_p99": bench.best.latency_ms_p99,
                "throughput_spread": bench.best.spread,
            }
            if bench.naive:
                metrics["tuned_over_naive"] = bench.best.throughput / bench.naive.throughput
            for point in bench.points:  # step = batch size (or streams), so MLflow plots the sweeps
                if point.concurrency == 1:
                    mlflow.log_metric("throughput_by_batch", point.throughput, step=point.batch_size)
                    mlflow.log_metric("latency_ms_p99_by_batch", point.latency_ms_p99, step=point.batch_size)
                else:
                    mlflow.log_metric("throughput_by_streams", point.throughput, step=point.concurrency)
                    mlflow.log_metric("latency_ms_p99_by_streams", point.latency_ms_p99, step=point.concurrency)
        mlflow.log_metrics(metrics)
        if compiled.log_uri and local_path(compiled.log_uri).exists():
            mlflow.log_artifact(str(local_path(compiled.log_uri)), artifact_path="compile")
        if compiled.status == "ok":
            mlflow.log_artifacts(str(local_path(compiled.uri)), artifact_path="compiled")
        if report:
            # the compile report names every device binary (e.g. Neuron NEFF) with its sha256;
            # the binaries themselves are under compiled/ (e.g. compiled/neff/*.neff)
            mlflow.log_dict(report.to_json(), "compile/compile_report.json")
        mlflow.log_dict(outcome.to_json(), "outcome.json")
        return run.info.run_id


def _version_of_run(registry, name: str, pipeline_run_id: str) -> str | None:
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


def _fmt_optional(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def review_description(
    settings: Settings, ctx: RunContext, selected: ConfigOutcome, best: BenchmarkPoint, parent_run_id: str
) -> str:
    """What a reviewer decides from: accuracy and throughput tables in Markdown, and links to the evidence."""
    compiled, validation = selected.compiled, selected.validation
    experiment = client(settings).get_run(selected.mlflow_run_id).info.experiment_id  # the parent's too

    def link(run_id: str, path: str = "") -> str:
        return run_url(settings, experiment, run_id, path)

    lines = [
        f"**{compiled.config.key}** at batch {best.shape}, selected by {ctx.params.selection}. Pipeline run {ctx.run_id}.",
        "",
    ]
    predictions = validation.predictions
    if validation.top5_delta is not None and predictions and predictions.top5 is not None:
        base_top1 = predictions.top1 - validation.top1_delta / 100
        base_top5 = predictions.top5 - validation.top5_delta / 100
        lines += [
            f"Accuracy on {predictions.samples} samples of {ctx.params.dataset}:",
            "",
            "| model | top-1 | top-5 | top-5 agreement |",
            "|---|---|---|---|",
            f"| CPU baseline | {base_top1:.3f} | {base_top5:.3f} | |",
            f"| {compiled.config.key} | {predictions.top1:.3f} ({validation.top1_delta:+.2f} pp) "
            f"| {predictions.top5:.3f} ({validation.top5_delta:+.2f} pp) | {validation.top5_agreement:.3f} |",
        ]
    else:
        lines.append(
            f"Outputs vs the CPU baseline: lowest cosine {_fmt_optional(validation.cosine_min, '.5f')}, "
            f"max abs diff {_fmt_optional(validation.max_abs_diff, '.3g')}."
        )
    lines += [
        "",
        "Throughput sweep:",
        "",
        "| batch x streams | samples/s | p50 ms | p99 ms | stable |",
        "|---|---|---|---|---|",
    ]
    for p in selected.benchmark.points:
        mark = " **(selected)**" if p == best else ""
        lines.append(
            f"| {p.shape}{mark} | {p.throughput:.1f} | {p.latency_ms_p50:.1f} | {p.latency_ms_p99:.1f} "
            f"| {'yes' if p.stable else 'no'} |"
        )
    lines += [
        "",
        f"Evidence: [config run]({link(selected.mlflow_run_id)}), "
        f"[compile report]({link(selected.mlflow_run_id, 'compile/compile_report.json')}), "
        f"[GX validation and Data Docs]({link(parent_run_id, RUN_SUBDIR)}), "
        f"[plots]({link(parent_run_id, 'plots')}), "
        f"[run report]({link(parent_run_id, 'report.html')}).",
        "",
        "Approve: move alias `champion` to this version. Reject: set tag `review=rejected`.",
    ]
    return "\n".join(lines)


def _smoke_samples(selected: ConfigOutcome, dataset: DatasetRef, directory: Path, count: int = 16) -> Path:
    """The first validation samples and the compiled model's outputs on them, for the post-promotion smoke test."""
    import numpy as np

    from tasks import dataset as datasets

    data = datasets.load(dataset)
    count = min(count, len(data))
    outputs = np.load(local_path(selected.validation.predictions.outputs_uri))[:count]
    path = directory / "samples.npz"
    np.savez(path, outputs=outputs, **{f"input:{k}": v for k, v in data.inputs(0, count).items()})
    return path


def register(
    settings: Settings,
    ctx: RunContext,
    exported: ExportedModel,
    selected: ConfigOutcome,
    point: BenchmarkPoint | None = None,
    dataset: DatasetRef | None = None,
    parent_run_id: str = "",
) -> Registration:
    """Register the selected config (at its selected benchmark point) as a new version; alias ``candidate``."""
    import mlflow
    import mlflow.pyfunc

    if selected.gate != "pass":
        raise ValueError(f"config {selected.compiled.config.key} did not pass the gate; it cannot be registered")
    registry = client(settings)
    compiled, validation = selected.compiled, selected.validation
    config = compiled.config
    version = _version_of_run(registry, exported.name, ctx.run_id)
    if version is None:
        with tempfile.TemporaryDirectory() as tmp:
            record_path = Path(tmp) / "artifact.json"
            record_path.write_text(
                json.dumps(
                    {
                        **compiled.to_json(),
                        "inputs": [i.to_json() for i in exported.inputs],
                        "outputs": [o.to_json() for o in exported.outputs],
                    }
                )
            )
            with mlflow.start_run(run_id=selected.mlflow_run_id):
                if dataset is not None and selected.validation.predictions:
                    mlflow.log_artifact(str(_smoke_samples(selected, dataset, Path(tmp))), "smoke")
                from tasks.serving_model import CompiledModel

                info = mlflow.pyfunc.log_model(
                    name="model",
                    python_model=CompiledModel(),
                    artifacts={"compiled": str(local_path(compiled.uri)), "artifact_record": str(record_path)},
                    code_paths=[str(PROJECT_ROOT / "tasks")],
                    pip_requirements=[*RUNTIME_REQUIREMENTS[config.target], "numpy", "pydantic"],
                )
        # The pipeline-run tag is set as the version is created, so a retry finds it.
        mlflow.register_model(info.model_uri, exported.name, tags={PIPELINE_RUN_TAG: ctx.run_id})
        version = _version_of_run(registry, exported.name, ctx.run_id)
    best = point or selected.benchmark.best
    tags = {
        "target": config.target,
        "precision": config.precision,
        "batch_size": str(best.batch_size),
        "concurrency": str(best.concurrency),
        "copies": str(best.copies),
        "selection": ctx.params.selection
        + (f" (p99 <= {ctx.params.latency_budget_ms} ms)" if ctx.params.latency_budget_ms else ""),
        "throughput": f"{best.throughput:.1f}",
        "latency_ms_p99": f"{best.latency_ms_p99:.2f}",
        "top5_delta_pp": "n/a" if validation.top5_delta is None else f"{validation.top5_delta:.2f}",
        "top5_agreement": "n/a" if validation.top5_agreement is None else f"{validation.top5_agreement:.4f}",
        "cosine_min": _fmt_optional(validation.cosine_min, ".6f"),
        "validation": selected.gate,
        "compiler": f"{compiled.compiler} {compiled.compiler_version}",
        "source_run": selected.mlflow_run_id,
        "source_sha256": exported.source_sha256,
        "artifact_sha256": compiled.sha256,
    }
    for key, value in tags.items():
        registry.set_model_version_tag(exported.name, version, key, value)
    registry.update_model_version(
        exported.name, version, description=review_description(settings, ctx, selected, best, parent_run_id)
    )
    registry.set_registered_model_alias(exported.name, CANDIDATE_ALIAS, version)
    return Registration(
        registered_model=exported.name,
        version=version,
        alias=CANDIDATE_ALIAS,
        model_uri=f"models:/{exported.name}/{version}",
        run_id=selected.mlflow_run_id,
        config=config,
    )
