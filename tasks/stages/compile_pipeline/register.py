"""Task ``register``: the config and measured point the selection strategy picks, registered in MLflow as a new
version with alias ``candidate``, tags, and a description a reviewer decides from."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from tasks import targets
from tasks.core import settings as settings_module
from tasks.core.figures import FIGURES, fmt
from tasks.core.outcomes import ConfigOutcome, Recorded, Registration
from tasks.core.records import DatasetRef, ExportedModel, RunContext
from tasks.core.results import BenchmarkPoint
from tasks.core.settings import Settings
from tasks.core.store import artifact_dir
from tasks.datasets.prepare import load as load_dataset
from tasks.registry.client import CANDIDATE_ALIAS, client, run_url
from tasks.registry.versions import label_version, register_version, version_of_pipeline_run
from tasks.report.tables import Table
from tasks.stages.compile_pipeline.gate import RUN_SUBDIR, select
from tasks.stages.runner import progress, stage
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
    predictions, primary = validation.predictions, validation.primary
    if predictions and predictions.top5 is not None:
        shown = [f for f in FIGURES if "accuracy" in f.report and f.value(primary) is not None]
        accuracy = Table(["model", "top-1", "top-5", *(f.label for f in shown)])
        accuracy.rows.append(
            ["CPU baseline", fmt(validation.baseline_top1), fmt(validation.baseline_top5)] + [""] * len(shown)
        )
        accuracy.rows.append([compiled.config.key, fmt(predictions.top1), fmt(predictions.top5),
                              *(f.with_interval(primary) for f in shown)])  # fmt: skip
        lines += [f"Accuracy on {predictions.samples} samples of {ctx.params.dataset}:", "", *accuracy.markdown(), ""]
    figures = Table(["output", "judged by", "figures against the CPU baseline (95 % intervals)"])
    for check in validation.outputs:
        shown = [f for f in FIGURES if f.report and f.value(check) is not None]
        said = ", ".join(f"{f.label} {f.with_interval(check)}" for f in shown)
        figures.rows.append([check.name, check.rule, said])
    lines += ["Outputs vs the CPU baseline:", ""]
    lines += figures.markdown()
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
    compiled, validation = selected.compiled, selected.validation
    config = compiled.config
    version = version_of_pipeline_run(client(settings), exported.name, ctx.run_id)
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
        version = register_version(settings, exported.name, info.model_uri, ctx.run_id)
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
        **{f.tag: f.text(f.value(validation.primary), missing="n/a") for f in FIGURES if f.tag},
        "validation": selected.gate,
        "compiler": f"{compiled.compiler} {compiled.compiler_version}",
        "source_run": selected.mlflow_run_id,
        "source_sha256": exported.source_sha256,
        "artifact_sha256": compiled.sha256,
    }
    if best.runtime:  # the runtime settings the selected point ran with: promotion writes them into serving's config
        tags["runtime_settings"] = json.dumps(best.runtime, sort_keys=True)
    description = review_description(settings, ctx, selected, best, parent_run_id)
    label_version(settings, exported.name, version, tags, description, alias=CANDIDATE_ALIAS)
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
