"""The "Compile reports" page of the Airflow UI plugin (plugins/compile_reports.py), without Airflow.

It reads MLflow (each pipeline run's report.json and plots, logged to its parent run) and S3
(which registry versions are committed serving versions), never Airflow's database, so it shows
runs from any Airflow deployment that shares the tracking server and the serving bucket.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from tasks.core.mlflow_client import PIPELINE_RUN_TAG, client, run_url
from tasks.core.settings import Settings
from tasks.report.plots import THROUGHPUT_PNG
from tasks.report.tables import render as render_template
from tasks.serving.store import Store

# Heavy, so imported inside the functions that need them (the API server imports this plugin page): mlflow.

THROUGHPUT_PLOT = f"plots/{THROUGHPUT_PNG}"


def _served_versions(settings: Settings, model: str) -> dict[str, str]:
    """Registry version -> the S3 URI of its committed serving version."""

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
            # A run still in progress (or stopped before finalize) has no report yet: asking MLflow to download
            # a missing artifact is a server error it retries with backoff for minutes, so look first.
            if not any(a.path == "report.json" for a in tracking.list_artifacts(run.info.run_id)):
                continue
            try:
                path = tracking.download_artifacts(run.info.run_id, "report.json", tmp)
            except Exception:  # noqa: BLE001 - unreadable (the store lost it): the page shows the other runs
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


def plot_png(settings: Settings, run_id: str) -> bytes | None:
    """The throughput plot of a pipeline run; None for any other run (the page serves no other artifact)."""
    from mlflow.exceptions import MlflowException

    tracking = client(settings)
    experiment = tracking.get_experiment_by_name(settings.experiment)
    try:
        run = tracking.get_run(run_id)
    except MlflowException:
        return None
    if (
        experiment is None
        or run.info.experiment_id != experiment.experiment_id
        or PIPELINE_RUN_TAG not in run.data.tags
    ):
        return None
    if not any(a.path == THROUGHPUT_PLOT for a in tracking.list_artifacts(run_id, "plots")):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        return Path(tracking.download_artifacts(run_id, THROUGHPUT_PLOT, tmp)).read_bytes()


def _cell(value, spec: str = "") -> str:
    if value is None or value == "":
        return "-"
    return format(value, spec) if spec else str(value)


def render(rows: list[dict], plot_url: str = "plot/{run_id}") -> str:
    """One section per run: model, source sha, status, per-config gate and throughput, plot, links."""
    runs = []
    for row in rows:
        report = row["report"]
        runs.append(
            {
                **row,
                "status": report.get("status", ""),
                "sha256": ((report.get("model") or {}).get("sha256") or "")[:16],
                "plot_url": plot_url.format(run_id=row["mlflow_run_id"]) if row["has_plot"] else "",
                "configs": [
                    {
                        "key": c["key"],
                        "gate": c.get("gate") or "",
                        "throughput": _cell(c.get("throughput"), ".1f"),
                        "top5_delta": _cell(c.get("top5_delta"), "+.2f"),
                        "top1_agreement": _cell(c.get("top1_agreement"), ".3f"),
                        "top5_agreement": _cell(c.get("top5_agreement"), ".3f"),
                        "reasons": _cell("; ".join(c.get("gate_reasons") or [])[:300]),
                    }
                    for c in report.get("configs") or []
                ],
            }
        )
    return render_template("reports_page.html.j2", runs=runs)
