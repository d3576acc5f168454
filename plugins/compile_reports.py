"""Airflow UI plugin: a "Compile reports" page in the navigation, served by a FastAPI app.

The page (tasks/report/page.py) reads MLflow and S3, not Airflow's database: recent pipeline
runs with model, source sha256, each config's gate result and throughput, the throughput plot,
and links to the MLflow run, the registered version and the serving version on S3.

Airflow mounts a plugin app without its own authentication, so this app guards every route itself with
Airflow's auth manager: the caller's JWT (the UI's session cookie or an ``Authorization: Bearer``
header) must name a user allowed to read the runs of the ``compile_pipeline`` DAG. No token: 401; a
forged or expired one: 401/403; a user without that access: 403. FastAPI's own docs routes are off.
"""

from __future__ import annotations

import os

from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.core_api.security import requires_access_dag
from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from tasks.core import settings as settings_module
from tasks.report import page as reports_page


def _interactive_mlflow() -> None:
    """The page is interactive: a run whose artifacts cannot be read (deleted from the store, a server error) is
    left out after one retry, not retried with backoff for minutes (MLflow's defaults: 7 retries, 120 s timeout).

    Set when a page is served, not when the module is imported: Airflow imports plugins in every process, task
    processes too, whose MLflow calls must keep their retries. The API server makes no other MLflow calls;
    a deployment can still set its own values.
    """
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")


PIPELINE_DAG = "compile_pipeline"  # the reports are its runs: who may read those may read these

app = FastAPI(
    title="Compile reports",
    dependencies=[Depends(requires_access_dag("GET", DagAccessEntity.RUN, param_dag_id=PIPELINE_DAG))],
    docs_url=None,
    redoc_url=None,
    openapi_url=None,
)


@app.exception_handler(HTTPException)
async def login_first(request: Request, exc: HTTPException):
    """A browser without a session goes to Airflow's login page and comes back; an API client gets the 401."""
    if exc.status_code == 401 and "text/html" in request.headers.get("accept", ""):
        return RedirectResponse(get_auth_manager().get_url_login(next_url=str(request.url)), status_code=303)
    return await http_exception_handler(request, exc)


@app.get("/", response_class=HTMLResponse)
def index(limit: int = 20) -> str:
    _interactive_mlflow()
    return reports_page.render(reports_page.collect(settings_module.load(), limit))


@app.get("/plot/{run_id}")
def plot(run_id: str) -> Response:
    _interactive_mlflow()
    png = reports_page.plot_png(settings_module.load(), run_id)
    if png is None:
        raise HTTPException(404, f"no throughput plot of a pipeline run {run_id!r}")
    return Response(png, media_type="image/png")


class CompileReportsPlugin(AirflowPlugin):
    name = "compile_reports"
    fastapi_apps = [{"app": app, "url_prefix": "/compile-reports", "name": "Compile reports"}]
    # a navigation entry that shows the page inside the Airflow UI
    external_views = [
        {"name": "Compile reports", "href": "compile-reports/", "destination": "nav", "url_route": "compile-reports"}
    ]
