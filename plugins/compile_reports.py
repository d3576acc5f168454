"""Airflow UI plugin: the "Compile reports" pages in the navigation, served by a FastAPI app (an external view).

Pages (tasks/report/ui): the pipeline runs (filter by model, status and dates), one run (its configs with their gate
verdicts and failed expectations, charts, tables, the selected point and why, links to the Airflow task logs, the
MLflow run, the GX Data Docs and the served S3 version) and a model's history (every registered version, its review,
which one serves). They read MLflow and S3, not Airflow's database. The charts are Vega-Lite specs drawn in the
browser by the Vega-Embed bundle this app serves itself (vl-convert-python's): nothing is fetched from elsewhere.

Airflow mounts a plugin app without its own authentication, so this app guards every route itself with
Airflow's auth manager: the caller's JWT (the UI's session cookie or an ``Authorization: Bearer``
header) must name a user allowed to read the runs of the ``compile_pipeline`` DAG. No token: 401 (a browser is sent
to Airflow's login page and back); a forged or expired one: 401/403; a user without that access: 403. FastAPI's own
docs routes are off.
"""

from __future__ import annotations

import functools
import json
import mimetypes
import os
from datetime import date

from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.core_api.security import requires_access_dag
from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from tasks.core import settings as settings_module
from tasks.core.schema import check_safe_name
from tasks.report.ui import collect, pages


def _interactive_mlflow() -> None:
    """The pages are interactive: a run whose artifacts cannot be read (deleted from the store, a server error) is
    left out after one retry, not retried with backoff for minutes (MLflow's defaults: 7 retries, 120 s timeout).

    Set when a page is served, not when the module is imported: Airflow imports plugins in every process, task
    processes too, whose MLflow calls must keep their retries. The API server makes no other MLflow calls;
    a deployment can still set its own values.
    """
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")


PIPELINE_DAG = pages.PIPELINE_DAG  # the reports are its runs: who may read those may read these
URL_PREFIX = "/compile-reports"
CACHED = "private, max-age=31536000, immutable"  # static files, by names that change with their content

app = FastAPI(
    title="Compile reports",
    dependencies=[Depends(requires_access_dag("GET", DagAccessEntity.RUN, param_dag_id=PIPELINE_DAG))],
    docs_url=None,
    redoc_url=None,
    openapi_url=None,
)
app.add_middleware(GZipMiddleware, minimum_size=2048)


@app.exception_handler(HTTPException)
async def login_first(request: Request, exc: HTTPException):
    """A browser without a session goes to Airflow's login page and comes back; an API client gets the 401."""
    if exc.status_code == 401 and "text/html" in request.headers.get("accept", ""):
        return RedirectResponse(get_auth_manager().get_url_login(next_url=str(request.url)), status_code=303)
    return await http_exception_handler(request, exc)


def _vega_name() -> str:
    from importlib.metadata import version

    return f"vega-{version('vl-convert-python')}.js"


@functools.cache
def _vega() -> bytes:
    """The Vega, Vega-Lite and Vega-Embed bundle (made once per process: about 3 s)."""
    import vl_convert

    return vl_convert.javascript_bundle().encode()


@functools.cache
def _own_static() -> dict[str, str]:
    return pages.static_files()


def _site(request: Request) -> pages.Site:
    """Links for this request: this app's path (the prefix Airflow mounted it at) and Airflow's UI above it."""
    root = request.scope.get("root_path", "").rstrip("/") or URL_PREFIX
    return pages.Site(
        root=root,
        airflow=root.removesuffix(URL_PREFIX),
        settings=settings_module.load(),
        static={**_own_static(), "vega": _vega_name()},
    )


def _day(value: str, name: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise HTTPException(422, f"{name} must be a date as YYYY-MM-DD, got {value[:40]!r}") from None


def _model(name: str) -> str:
    try:
        return check_safe_name(name, "model name")
    except ValueError:
        raise HTTPException(404, "no such model") from None


@app.get("/", response_class=HTMLResponse)
def runs(
    request: Request,
    model: str = "",
    status: str = Query("", pattern="^(|success|failed)$"),
    since: str = "",
    until: str = "",
    limit: int = Query(25, ge=1, le=200),
) -> str:
    _interactive_mlflow()
    settings = settings_module.load()
    filters = collect.Filters(
        model=_model(model) if model else "",
        status=status,
        since=_day(since, "since"),
        until=_day(until, "until"),
        limit=limit,
    )
    entries = collect.pipeline_runs(settings, filters)
    served = {name: collect.serving(settings, name) for name in {e.model for e in entries if e.model}}
    return pages.runs_page(_site(request), entries, filters, collect.model_names(settings), served)


@app.get("/runs/{mlflow_run_id}", response_class=HTMLResponse)
def run(request: Request, mlflow_run_id: str) -> str:
    _interactive_mlflow()
    settings = settings_module.load()
    entry = collect.pipeline_run(settings, mlflow_run_id)
    if entry is None:
        raise HTTPException(404, f"no pipeline run with MLflow run id {mlflow_run_id[:64]!r} and a report")
    serving = collect.serving(settings, entry.model) if entry.model else collect.Serving()
    return pages.run_page(_site(request), entry, serving)


@app.get("/runs/{mlflow_run_id}/data-docs/{path:path}")
def data_docs(mlflow_run_id: str, path: str) -> Response:
    """The run's GX Data Docs site, as logged to MLflow; sandboxed, so its scripts cannot act as the viewer."""
    _interactive_mlflow()
    body = collect.data_docs_file(settings_module.load(), mlflow_run_id, path)
    if body is None:
        raise HTTPException(404, "no such file in this run's GX Data Docs")
    kind = mimetypes.guess_type(path)[0] or "application/octet-stream"
    return Response(body, media_type=kind, headers={"Content-Security-Policy": "sandbox allow-scripts allow-popups"})


@app.get("/models/{name}", response_class=HTMLResponse)
def history(request: Request, name: str) -> str:
    _interactive_mlflow()
    return pages.history_page(_site(request), collect.model_history(settings_module.load(), _model(name)))


@app.get("/models/{name}/serving/{number}")
def serving_manifest(name: str, number: int) -> Response:
    """The commit marker (manifest) of a committed serving version on S3: its files, their sha256, its registry
    version."""
    found = collect.manifest(settings_module.load(), _model(name), number)
    if found is None:
        raise HTTPException(404, f"{name} has no committed serving version {number}")
    return Response(json.dumps(found, indent=2), media_type="application/json")


@app.get("/static/{name}")
def static(name: str) -> Response:
    if name == _vega_name():
        return Response(_vega(), media_type="text/javascript", headers={"Cache-Control": CACHED})
    if name not in _own_static():
        raise HTTPException(404, "no such file")
    kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return Response((pages.STATIC / name).read_bytes(), media_type=kind, headers={"Cache-Control": CACHED})


class CompileReportsPlugin(AirflowPlugin):
    name = "compile_reports"
    fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": "Compile reports"}]
    # a navigation entry that shows the pages inside the Airflow UI
    external_views = [
        {"name": "Compile reports", "href": "compile-reports/", "destination": "nav", "url_route": "compile-reports"}
    ]
