"""Airflow UI plugin: a "Compile reports" page in the navigation, served by a FastAPI app.

The page (tasks/report/page.py) reads MLflow and S3, not Airflow's database: recent pipeline
runs with model, source sha256, each config's gate result and throughput, the throughput plot,
and links to the MLflow run, the registered version and the serving version on S3.
"""

from __future__ import annotations

import os

from airflow.plugins_manager import AirflowPlugin
from fastapi import FastAPI
from fastapi.responses import HTMLResponse, Response

from tasks.core import settings as settings_module
from tasks.report import page as reports_page

# The page is interactive: a run whose artifacts cannot be read (deleted from the store, a server error) is left
# out after one retry, not retried with backoff for minutes (MLflow's defaults: 7 retries, 120 s timeout).
# This process (the API server) makes no other MLflow calls; a deployment can still set its own values.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")

app = FastAPI(title="Compile reports")


@app.get("/", response_class=HTMLResponse)
def index(limit: int = 20) -> str:
    return reports_page.render(reports_page.collect(settings_module.load(), limit))


@app.get("/plot/{run_id}")
def plot(run_id: str) -> Response:
    return Response(reports_page.plot_png(settings_module.load(), run_id), media_type="image/png")


class CompileReportsPlugin(AirflowPlugin):
    name = "compile_reports"
    fastapi_apps = [{"app": app, "url_prefix": "/compile-reports", "name": "Compile reports"}]
    # a navigation entry that shows the page inside the Airflow UI
    external_views = [
        {"name": "Compile reports", "href": "compile-reports/", "destination": "nav", "url_route": "compile-reports"}
    ]
