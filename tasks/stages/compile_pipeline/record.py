"""Task ``record``: the pipeline run and one child run per config in MLflow, with metrics, artifacts and the
gate's Data Docs; a retried record replaces the runs of the attempt it retries."""

from __future__ import annotations

from tasks.core import settings as settings_module
from tasks.core.figures import FIGURES
from tasks.core.outcomes import ConfigOutcome, Gated, Recorded
from tasks.core.records import DatasetRef, ExportedModel, FileRef, Outcome, RunContext
from tasks.core.results import BaselineResult
from tasks.core.settings import Settings
from tasks.core.store import artifact_dir, fetch
from tasks.registry.client import PIPELINE_RUN_TAG, client, delete_pipeline_runs, experiment_id_of
from tasks.registry.versions import version_of_pipeline_run
from tasks.stages.compile_pipeline.gate import RUN_SUBDIR, gate_params
from tasks.stages.runner import progress, stage


# mlflow is imported inside functions: heavy, and never needed to parse the DAG.
def record(
    settings: Settings,
    ctx: RunContext,
    exported: ExportedModel,
    dataset: DatasetRef,
    baselines: list[BaselineResult],
    outcomes: list[ConfigOutcome],
    skipped: list[Outcome],
    gate_docs: FileRef | None = None,
) -> tuple[str, list[ConfigOutcome]]:
    """Log the pipeline run and one child run per config; returns the parent run id and outcomes with run ids."""
    import mlflow

    registry = client(settings)
    experiment_id = experiment_id_of(settings)
    if version_of_pipeline_run(registry, exported.name, ctx.run_id) is None:  # a registered version keeps its runs
        delete_pipeline_runs(registry, experiment_id, ctx.run_id)  # an earlier attempt's: a retry logs them whole
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
                **{name: getattr(params, name) for name in gate_params()},
                "dataset": params.dataset,
                "dataset_sha256": dataset.sha256,
                "dataset_samples": dataset.samples,
            }
        )
        for baseline in baselines:  # one per host class that ran configs; the CPU hosts' without a suffix
            suffix = "" if baseline.host_class == "cpu" else f"_{baseline.host_class}"
            best_base = baseline.benchmark.best
            baseline_metrics = {
                "baseline_top1": baseline.predictions.top1,  # None on data without labels: not logged
                "baseline_top5": baseline.predictions.top5,
                "baseline_throughput": best_base.throughput if best_base else None,
            }
            mlflow.log_metrics({f"{k}{suffix}": v for k, v in baseline_metrics.items() if v is not None})
            if baseline.benchmark.machine:
                mlflow.set_tag(f"baseline_host{suffix}", baseline.benchmark.machine.host)
        for skip in skipped:
            mlflow.set_tag(f"skipped.{skip.subject}", skip.reason[:5000])
        if gate_docs is not None:  # the GX suite's validation result and its Data Docs site
            mlflow.log_artifacts(str(fetch(gate_docs)), artifact_path=RUN_SUBDIR)
        for outcome in outcomes:
            recorded.append(
                outcome.model_copy(update={"mlflow_run_id": _record_config(experiment_id, parent, outcome)})
            )
    return parent.info.run_id, recorded


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
                # which hosts its figures came from
                "compiled_on": compiled.host,
                "validated_on": validation.host if validation else "",
                "benchmarked_on": bench.machine.host if bench and bench.machine else "",
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
                **{f.metric: f.value(validation.primary, validation) for f in FIGURES if f.metric},
            }
            metrics |= {k: v for k, v in candidates.items() if v is not None}  # top-k only for labelled data
            if len(validation.outputs) > 1:  # every output's own figures, e.g. output.<name>.<figure>
                for check in validation.outputs:
                    figures = {f.name: f.value(check, validation) for f in FIGURES if f.metric}
                    metrics |= {f"output.{check.name}.{k}": v for k, v in figures.items() if v is not None}
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
        if compiled.log_ref:
            mlflow.log_artifact(str(fetch(compiled.log_ref)), artifact_path="compile")
        if compiled.status == "ok":
            mlflow.log_artifacts(str(artifact_dir(compiled)), artifact_path="compiled")
        if report:
            # the compile report names every device binary (e.g. Neuron NEFF) with its sha256;
            # the binaries themselves are under compiled/ (e.g. compiled/neff/*.neff)
            mlflow.log_dict(report.to_json(), "compile/compile_report.json")
        mlflow.log_dict(outcome.to_json(), "outcome.json")
        return run.info.run_id


@stage("record")
def run(
    ctx: RunContext,
    exported: ExportedModel,
    dataset: DatasetRef,
    baselines: list[BaselineResult],
    skipped: list[Outcome],
    gated: Gated,
) -> Recorded:
    """``baselines``: one per host class that ran configs; ``skipped``: the targets the plan skipped, with their
    reasons (tags of the parent run)."""
    settings = settings_module.load()
    parent_run_id, recorded = record(
        settings, ctx, exported, dataset, baselines, gated.outcomes, skipped, gate_docs=gated.docs
    )
    progress("record", f"MLflow run {parent_run_id} with {len(recorded)} config runs at {settings.mlflow_tracking_uri}")
    return Recorded(
        tracking_uri=settings.mlflow_tracking_uri,
        experiment=settings.experiment,
        run_id=parent_run_id,
        outcomes=recorded,
    )
