"""The "Compile reports" page of the Airflow UI plugin (plugins/compile_reports.py), without Airflow.

It reads MLflow (each pipeline run's report.json and plots, logged to its parent run) and S3
(which registry versions are committed serving versions), never Airflow's database, so it shows
runs from any Airflow deployment that shares the tracking server and the serving bucket.
"""

from __future__ import annotations

import html
import json
import tempfile
from pathlib import Path

from tasks.plots import THROUGHPUT_PNG
from tasks.settings import Settings
from tasks.tracking import PIPELINE_RUN_TAG, client, run_url

THROUGHPUT_PLOT = f"plots/{THROUGHPUT_PNG}"


def _served_versions(settings: Settings, model: str) -> dict[str, str]:
    """Registry version -> the S3 URI of its committed serving version."""
    from tasks.promote import Store

    try:
        store = Store(settings, model)
        return {str(m["mlflow"]["version"]): store.uri(f"{n}/") for n, m in store.committed().items()}
    except Exception:  # noqa: BLE001 - the page still shows the run without S3 (e.g. bucket unreachable)
        return {}


def collect(settings: Settings, limit: int = 20) -> list[dict]:
    """The latest pipeline runs, newest first, each as its report.json plus links."""
    tracking = client(settings)
    experiment = tracking.get_experiment_by_name(settings.experiment)
    if experiment is None:
        return []
    runs = tracking.search_runs(  # the pipeline tag is on parent runs only, not on the config runs under them
        [experiment.experiment_id],
        filter_string=f"tags.{PIPELINE_RUN_TAG} != ''",
        order_by=["attributes.start_time DESC"],
        max_results=limit,
    )
    rows, served = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for run in runs:
            try:
                path = tracking.download_artifacts(run.info.run_id, "report.json", tmp)
            except Exception:  # noqa: BLE001 - a run still in progress has no report yet
                continue
            report = json.loads(Path(path).read_text())
            model = (report.get("model") or {}).get("name") or report["params"].get("model_name", "")
            if model and model not in served:
                served[model] = _served_versions(settings, model)
            version = report["mlflow"].get("version")
            rows.append(
                {
                    "report": report,
                    "model": model,
                    "mlflow_run_id": run.info.run_id,
                    "mlflow_run_url": run_url(settings, experiment.experiment_id, run.info.run_id),
                    "registered_url": f"{settings.mlflow_tracking_uri}/#/models/{model}/versions/{version}"
                    if version
                    else "",
                    "s3_uri": served.get(model, {}).get(str(version), "") if version else "",
                    "has_plot": any(
                        a.path == THROUGHPUT_PLOT for a in tracking.list_artifacts(run.info.run_id, "plots")
                    ),
                }
            )
    return rows


def plot_png(settings: Settings, run_id: str) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        return Path(client(settings).download_artifacts(run_id, THROUGHPUT_PLOT, tmp)).read_bytes()


def _cell(value, spec: str = "") -> str:
    if value is None or value == "":
        return "<td>-</td>"
    return f"<td>{html.escape(format(value, spec) if spec else str(value))}</td>"


def render(rows: list[dict], plot_url: str = "plot/{run_id}") -> str:
    """One section per run: model, source sha, status, per-config gate and throughput, plot, links."""
    e = html.escape
    sections = []
    for row in rows:
        report = row["report"]
        model = report.get("model") or {}
        configs = "".join(
            "<tr>"
            + _cell(c["key"])
            + f"<td class='gate-{e(c.get('gate') or '')}'>{e(c.get('gate') or '-')}</td>"
            + _cell(c.get("throughput"), ".1f")
            + _cell(c.get("top5_delta"), "+.2f")
            + _cell(c.get("top5_agreement"), ".3f")
            + _cell("; ".join(c.get("gate_reasons") or [])[:300])
            + "</tr>"
            for c in report.get("configs") or []
        )
        links = [f"<a href='{e(row['mlflow_run_url'])}'>MLflow run</a>"]
        if row["registered_url"]:
            links.append(
                f"<a href='{e(row['registered_url'])}'>registered {e(row['model'])} "
                f"version {e(str(report['mlflow']['version']))}</a>"
            )
        if row["s3_uri"]:
            links.append(f"serving: <code>{e(row['s3_uri'])}</code>")
        plot = (
            f"<img alt='throughput vs batch size' src='{e(plot_url.format(run_id=row['mlflow_run_id']))}' width='480'>"
            if row["has_plot"]
            else ""
        )
        status = report.get("status", "")
        error = f"<p class='error'>failed at {e(str(report.get('failed_stage')))}: {e(str(report.get('error')))}</p>"
        sections.append(
            f"<section class='run' data-run-id='{e(report['run_id'])}'>"
            f"<h2>{e(row['model'])} <small>{e(report['run_id'])}</small> "
            f"<span class='status-{e(status)}'>{e(status)}</span></h2>"
            f"<p>source sha256 <code>{e((model.get('sha256') or '')[:16])}</code>, "
            f"selected <b>{e(str(report.get('selected') or '-'))}</b> &middot; {' &middot; '.join(links)}</p>"
            + (error if status == "failed" else "")
            + "<table><tr><th>config</th><th>gate</th><th>samples/s</th><th>top-5 &Delta; (pp)</th>"
            "<th>top-5 agreement</th><th>gate reasons</th></tr>" + configs + f"</table>{plot}</section>"
        )
    body = "".join(sections) or "<p>No pipeline runs recorded in MLflow yet.</p>"
    style = (
        "body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;margin:.5em 0}"
        "td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}.gate-pass{color:#176f2c}"
        ".gate-fail,.status-failed,.error{color:#b3261e}section{margin-bottom:2em}"
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Compile reports</title>"
        f"<style>{style}</style></head><body><h1>Compile reports</h1>{body}</body></html>"
    )
