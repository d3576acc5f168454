"""Task ``register``: the config and measured point the selection strategy picks, registered in MLflow as a new
version with alias ``candidate``, tags, and a description a reviewer decides from."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from tasks import targets
from tasks.core import settings as settings_module
from tasks.core.mlflow_client import CANDIDATE_ALIAS, PIPELINE_RUN_TAG, client, run_url, version_of_pipeline_run
from tasks.core.records import DatasetRef, ExportedModel, RunContext
from tasks.core.results import BenchmarkPoint, ConfigOutcome, Recorded, Registration
from tasks.core.settings import Settings
from tasks.core.store import artifact_dir
from tasks.datasets.prepare import load as load_dataset
from tasks.report.tables import Table
from tasks.serving.review import prepare_approved_model
from tasks.stages.compile_pipeline.gate import RUN_SUBDIR, select
from tasks.stages.runner import fmt, progress, stage
from tasks.validation.predictions import load_outputs


# mlflow is imported inside functions: heavy, and never needed to parse the DAG.
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
        accuracy = Table(
            ["model", "top-1", "top-5", "top-1 agreement", "top-5 agreement"],
            [
                ["CPU baseline", f"{base_top1:.3f}", f"{base_top5:.3f}", "", ""],
                [
                    compiled.config.key,
                    f"{predictions.top1:.3f} ({validation.top1_delta:+.2f} pp)",
                    f"{predictions.top5:.3f} ({validation.top5_delta:+.2f} pp)",
                    f"{validation.top1_agreement:.3f}",
                    f"{validation.top5_agreement:.3f}",
                ],
            ],
        )
        lines += [f"Accuracy on {predictions.samples} samples of {ctx.params.dataset}:", "", *accuracy.markdown()]
    judged_by_closeness = [check for check in validation.outputs if not check.class_scores]
    if judged_by_closeness:
        lines += ["", "Outputs vs the CPU baseline:", ""]
        lines += [
            f"- {check.name}: lowest cosine {fmt(check.cosine_min, '.5f')}, "
            f"max abs diff {fmt(check.max_abs_diff, '.3g')}"
            for check in judged_by_closeness
        ]
    sweep = Table(["batch x streams", "samples/s", "p50 ms", "p99 ms", "stable"])
    for p in selected.benchmark.points:
        mark = " **(selected)**" if p == best else ""
        sweep.rows.append(
            [
                f"{p.shape}{mark}",
                f"{p.throughput:.1f}",
                f"{p.latency_ms_p50:.1f}",
                f"{p.latency_ms_p99:.1f}",
                ("yes" if p.stable else "no") + (", stopped early under the best" if p.stopped_early else ""),
            ]
        )
    lines += ["", "Throughput sweep:", "", *sweep.markdown()]
    lines += [
        "",
        f"Evidence: [config run]({link(selected.mlflow_run_id)}), "
        f"[compile report]({link(selected.mlflow_run_id, 'compile/compile_report.json')}), "
        f"[GX validation and Data Docs]({link(parent_run_id, RUN_SUBDIR)}), "
        f"[plots]({link(parent_run_id, 'plots')}), "
        f"[run report]({link(parent_run_id, 'report.html')}).",
        "",
        "Approve: copy this version into registered model `<this model>.approved` and move alias `champion` there "
        "to the copy. Reject: set tag `review=rejected`.",
    ]
    return "\n".join(lines)


def _smoke_samples(selected: ConfigOutcome, dataset: DatasetRef, directory: Path, count: int = 16) -> Path:
    """The first validation samples and the compiled model's outputs on them, for the post-promotion smoke test."""
    data = load_dataset(dataset)
    count = min(count, len(data))
    outputs = load_outputs(selected.validation.predictions)
    path = directory / "samples.npz"
    np.savez(
        path,
        **{f"output:{k}": v[:count] for k, v in outputs.items()},
        **{f"input:{k}": v for k, v in data.inputs(0, count).items()},
    )
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

    from tasks.serving.pyfunc import CompiledModel, serving_code  # subclasses mlflow's PythonModel: as heavy

    if selected.gate != "pass":
        raise ValueError(f"config {selected.compiled.config.key} did not pass the gate; it cannot be registered")
    registry = client(settings)
    compiled, validation = selected.compiled, selected.validation
    config = compiled.config
    version = version_of_pipeline_run(registry, exported.name, ctx.run_id)
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
                info = mlflow.pyfunc.log_model(
                    name="model",
                    python_model=CompiledModel(),
                    artifacts={"compiled": str(artifact_dir(compiled)), "artifact_record": str(record_path)},
                    code_paths=[str(serving_code(Path(tmp) / "code"))],
                    pip_requirements=[*targets.get(config.target).runtime_requirements, "numpy", "pydantic"],
                )
        # Before the first version: the approved model exists, and is out of the pipeline's hands, first.
        prepare_approved_model(settings, exported.name)
        # The pipeline-run tag is set as the version is created, so a retry finds it.
        mlflow.register_model(info.model_uri, exported.name, tags={PIPELINE_RUN_TAG: ctx.run_id})
        version = version_of_pipeline_run(registry, exported.name, ctx.run_id)
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
        "top1_agreement": "n/a" if validation.top1_agreement is None else f"{validation.top1_agreement:.4f}",
        "cosine_min": fmt(validation.cosine_min, ".6f"),
        "validation": selected.gate,
        "compiler": f"{compiled.compiler} {compiled.compiler_version}",
        "source_run": selected.mlflow_run_id,
        "source_sha256": exported.source_sha256,
        "artifact_sha256": compiled.sha256,
    }
    if best.runtime:  # the runtime settings the selected point ran with: promotion writes them into serving's config
        tags["runtime_settings"] = json.dumps(best.runtime, sort_keys=True)
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


@stage("register")
def run(ctx: RunContext, exported: ExportedModel, dataset: DatasetRef, recorded: Recorded) -> Registration:
    choice = select(recorded.outcomes, ctx.params.selection, ctx.params.latency_budget_ms)
    if choice is None:
        if any(o.gate == "pass" for o in recorded.outcomes):
            raise RuntimeError(
                f"no gate-passing config has a measured point with p99 within {ctx.params.latency_budget_ms} ms "
                "(selection max_throughput_under_latency); nothing is registered"
            )
        reasons = "; ".join(f"{o.compiled.config.key}: {', '.join(o.gate_reasons)}" for o in recorded.outcomes)
        raise RuntimeError(f"no config passed the gate, nothing is registered ({reasons})")
    selected, point = choice
    registration = register(settings_module.load(), ctx, exported, selected, point, dataset, recorded.run_id)
    progress(
        "register",
        f"{selected.compiled.config.key} at batch {point.shape} "
        f"({ctx.params.selection}) as {registration.registered_model} version {registration.version}, "
        f"alias {registration.alias}",
    )
    return registration.model_copy(update={"selected": selected.compiled.config.key, "selected_point": point})
