"""The run report published: Markdown and HTML (with the benchmark plots) for people, JSON for machines, and
the demo's summary; written to the run store beside the stages' results and logged to MLflow."""

from __future__ import annotations

import base64
import sys
from pathlib import Path

from tasks.core import store
from tasks.core.files import write_atomic, write_json
from tasks.core.settings import Settings
from tasks.registry.client import client as mlflow_client
from tasks.report import plots as plotting
from tasks.report.build import build
from tasks.report.records import RunReport
from tasks.report.run_tables import (
    accuracy_table,
    compile_table,
    hosts_table,
    outputs_table,
    probe_table,
    shows_outputs,
    throughput_table,
)
from tasks.report.tables import render

# Heavy, so imported inside the functions that need them (DAG parsing and most tasks never do): mlflow.


def _model_lines(report: RunReport) -> list[str]:
    model = report.model
    if not model:
        return []
    code = model.model_code or "none: weights and graphs only, nothing in the model file is executed"
    return [
        f"Model {model.name} ({model.framework}, {model.parameters:,} parameters), sha256 {model.sha256[:16]}…",
        f"Code from the model file: {code}",
        *_text_lines(report),
    ]


def _text_lines(report: RunReport) -> list[str]:
    """How the validation text fit the model's sequence length: never cut silently."""
    dataset = report.dataset
    if not dataset or not dataset.sequence_length:
        return []
    cut = dataset.truncated_samples
    return [
        f"Validation text: {dataset.samples} samples at {dataset.sequence_length} tokens; {cut} cut to fit"
        + (" (most of them: the gate refuses judging a model on cut text; raise sequence_length)"
           if cut * 2 > dataset.samples else "")
    ]  # fmt: skip


def _selected_line(report: RunReport) -> str:
    if not report.selected:
        return ""
    mlflow = report.mlflow
    return (
        f"Selected {report.selected}, registered as {mlflow.registered_model} "
        f"version {mlflow.version} (alias {mlflow.alias})."
    )


def markdown(report: RunReport) -> str:
    lines = [f"# Compile pipeline run `{report.run_id}`: {report.status}", ""]
    if report.error:
        lines += [f"**Failed at stage `{report.failed_stage}`:** {report.error}", ""]
    for line in _model_lines(report):
        lines += [line, ""]
    lines += accuracy_table(report).markdown() + [""] + _outputs_lines(report) + throughput_table(report).markdown()
    lines += ["", machine_line(report), ""] + compile_table(report).markdown() + [""]
    lines += hosts_table(report).markdown() + [""]
    if report.skipped_targets:
        lines += ["Skipped targets:", *[f"- {k}: {v}" for k, v in report.skipped_targets.items()], ""]
    if report.selected:
        lines.append(_selected_line(report))
    return "\n".join(lines) + "\n"


def _outputs_lines(report: RunReport) -> list[str]:
    return [*outputs_table(report).markdown(), ""] if shows_outputs(report) else []


def machine_line(report: RunReport) -> str:
    machine = report.machine
    if not machine:
        return ""
    peaks = ", ".join(f"{k} {v:.0f}" for k, v in machine.peak_gflops.items())
    flops = report.model.flops_per_sample if report.model else None
    return (
        f"machine: {machine.cpu_model}, {machine.cores_physical} cores ({machine.cores_logical} threads), "
        f"measured matmul peak GFLOP/s: {peaks}; model: "
        + (f"{flops / 1e9:.3f} GFLOPs per sample" if flops else "FLOPs not counted")
    )


def summary(report: RunReport, report_path: Path | str) -> str:
    """What the demo prints at the end; the last line is the report's path."""
    lines = [f"pipeline run {report.run_id}: {report.status.upper()}"]
    if report.error:
        lines.append(f"failed at stage '{report.failed_stage}': {report.error}")
    probe = probe_table(report)
    lines += _text_lines(report)
    lines += ["", *(probe.markdown() if probe else []), "", *accuracy_table(report).markdown(), ""]
    lines += _outputs_lines(report)
    lines += [*throughput_table(report).markdown(), machine_line(report), ""]
    lines += [*compile_table(report).markdown(), "", *hosts_table(report).markdown(), ""]
    hits = sum(1 for c in report.configs if c.compile_cache == "hit")
    stage_seconds = sum(c.compile_stage_seconds or 0 for c in report.configs)
    lines.append(f"compile cache: {hits} of {len(report.configs)} configs reused; compile stages {stage_seconds:.1f} s")
    # the stage make bench times and racing shortens: the baseline's sweep and every config's
    swept = [*([report.baseline] if report.baseline else []), *report.configs]
    seconds = sum(s.benchmark_seconds or 0 for s in swept)
    points = sum(len(s.benchmark) for s in swept)
    lines.append(f"benchmark stages (baseline and every config): {seconds:.1f} s, {points} points")
    for name, why in report.skipped_targets.items():
        lines.append(f"skipped target {name}: {why}")
    mlflow = report.mlflow
    if report.selected:
        at = f" at batch {report.selected_point.shape}" if report.selected_point else ""
        lines.append(f"selected: {report.selected}{at} ({report.selection or 'max_throughput'})")
        lines.append(f"registered: {mlflow.registered_model} version {mlflow.version} (alias {mlflow.alias})")
    if mlflow.run_id:
        lines.append(f"MLflow UI: {mlflow.tracking_uri} (experiment {mlflow.experiment}, run {mlflow.run_id})")
    # a path on this machine (resolved), or the report's URI in the run store as it is
    lines.append(f"report: {Path(report_path).resolve() if '://' not in str(report_path) else report_path}")
    return "\n".join(lines)


def html(report: RunReport, plots: list[Path]) -> str:
    """The report as a standalone HTML page (templates/run_report.html.j2), with the plots embedded."""
    return render(
        "run_report.html.j2",
        report=report,
        model_lines=_model_lines(report),
        tables=[
            accuracy_table(report),
            *([outputs_table(report)] if shows_outputs(report) else []),
            throughput_table(report),
            compile_table(report),
            hosts_table(report),
        ],  # fmt: skip
        machine=machine_line(report),
        selected=_selected_line(report),
        plots=[{"name": p.stem, "data": base64.b64encode(p.read_bytes()).decode()} for p in plots],
    )


def _log_to_mlflow(report: RunReport, directory: Path, settings: Settings) -> str:
    """Attach the reports to the pipeline's parent run (made here if the run failed before recording)."""
    import mlflow

    client = mlflow_client(settings)
    run_id = report.mlflow.run_id
    if run_id is None:
        experiment = mlflow.set_experiment(settings.experiment)
        run = client.create_run(experiment.experiment_id, run_name=f"failed {report.run_id}",
                                tags={"pipeline_run_id": report.run_id})  # fmt: skip
        run_id = run.info.run_id
    for name in REPORT_FILES:
        client.log_artifact(run_id, str(directory / name))
    if (directory / "plots").is_dir():
        client.log_artifacts(run_id, str(directory / "plots"), artifact_path="plots")
    client.set_tag(run_id, "pipeline_status", report.status)
    client.set_terminated(run_id, "FAILED" if report.error else "FINISHED")
    return run_id


REPORT_FILES = ("report.json", "report.md", "report.html")
LATEST = "latest"  # under RUN_STORE_URI: the URI of the newest report.json


def write(run_uri: str, run_id: str, settings: Settings, scratch: Path) -> tuple[str, dict | None]:
    """Write report.json, report.md, report.html and the plots (in ``scratch`` first), log them to MLflow and put
    them in the run store beside the stages' results; return (report.json's URI, the first failure)."""
    report = build(run_uri, run_id, settings)
    path = scratch / "report.json"
    write_json(path, report.to_json())
    write_atomic(scratch / "report.md", markdown(report))
    try:
        plots = plotting.write(report, scratch / "plots")
    except Exception as exc:  # a plot that cannot be drawn must not cost the run its report
        print(f"warning: could not draw the benchmark plots: {exc}", file=sys.stderr)
        plots = []
    write_atomic(scratch / "report.html", html(report, plots))
    try:
        logged = report.mlflow.model_copy(update={"run_id": _log_to_mlflow(report, scratch, settings)})
        report = report.model_copy(update={"mlflow": logged})
        write_json(path, report.to_json())
    except Exception as exc:  # the report in the run store stands even when MLflow is down
        print(f"warning: could not log the report to MLflow: {exc}", file=sys.stderr)
    for name in [*REPORT_FILES[1:], *(f"plots/{p.name}" for p in plots), REPORT_FILES[0]]:  # report.json last
        store.put_file(scratch / name, store.join(run_uri, name))
    uri = store.join(store.host_uri(run_uri), REPORT_FILES[0])
    store.put_bytes(uri, store.join(settings.run_store_uri, LATEST))
    failure = {"stage": report.failed_stage, "error": report.error} if report.error else None
    return uri, failure
