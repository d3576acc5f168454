"""The Compile reports pages as HTML: the runs, one run, a model's history. Server-rendered with the templates in
``templates/`` (which escape every value), styled after Airflow 3's UI by ``static/reports.css`` and drawn on by
``static/reports.js`` (colour mode, charts)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from urllib.parse import quote, urlencode

import jinja2

from tasks.core.figures import FIGURES, fmt
from tasks.core.outcomes import GateFinding
from tasks.core.settings import Settings
from tasks.registry.client import run_url
from tasks.report import run_tables
from tasks.report.records import ConfigRow, RunReport
from tasks.report.ui import charts, trend
from tasks.report.ui.collect import Filters, History, RunEntry, Serving, VersionEntry
from tasks.report.ui.findings import findings

HERE = Path(__file__).parent
STATIC = HERE / "static"
environment = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)
environment.filters["num"] = lambda value, spec=".1f": fmt(value, spec)
environment.globals["summary_figures"] = [f for f in FIGURES if "summary" in f.report]
environment.filters["when"] = lambda value: value.strftime("%Y-%m-%d %H:%M UTC") if isinstance(value, datetime) else "-"

PIPELINE_DAG = "compile_pipeline"
# the tasks a config's figures come from, one mapped task per config on its host class (dags/compile_pipeline.py)
CONFIG_TASKS = ("compile_config", "validate", "benchmark")
RUN_TASKS = ("start", "export", "prepare_dataset", "plan", "gate", "record", "register", "finalize")
WHY = {
    "max_throughput": "the most samples/s",
    "min_latency": "the lowest p99 latency per request (ties: the most samples/s)",
    "max_throughput_under_latency": "the most samples/s with p99 within the latency budget",
}


@dataclass(frozen=True)
class Site:
    """Where the pages link: this app's routes (``root``), Airflow's UI (``airflow``: its base path) and MLflow's."""

    root: str
    airflow: str
    settings: Settings
    static: dict[str, str] = field(default_factory=dict)  # file -> its URL, versioned by content

    def page(self, path: str = "/", **query) -> str:
        kept = {k: v for k, v in query.items() if v not in (None, "")}
        return f"{self.root}{path}" + (f"?{urlencode(kept)}" if kept else "")

    def run(self, mlflow_run_id: str) -> str:
        return f"{self.root}/runs/{quote(mlflow_run_id, safe='')}"

    def model(self, name: str) -> str:
        return f"{self.root}/models/{quote(name, safe='')}"

    def data_docs(self, mlflow_run_id: str) -> str:
        return f"{self.run(mlflow_run_id)}/data-docs/index.html"

    def manifest(self, model: str, number: int) -> str:
        return f"{self.model(model)}/serving/{number}"

    def airflow_run(self, dag_run_id: str) -> str:
        return f"{self.airflow}/dags/{PIPELINE_DAG}/runs/{quote(dag_run_id, safe='')}"

    def airflow_task(self, dag_run_id: str, task_id: str, mapped: bool = False) -> str:
        return f"{self.airflow_run(dag_run_id)}/tasks/{quote(task_id, safe='')}" + ("/mapped" if mapped else "")

    def mlflow_run(self, experiment_id: str, run_id: str, path: str = "") -> str:
        return run_url(self.settings, experiment_id, run_id, path)

    def mlflow_version(self, model: str, version: str) -> str:
        return f"{self.settings.mlflow_tracking_uri}/#/models/{quote(model, safe='')}/versions/{quote(str(version), safe='')}"


def static_files() -> dict[str, str]:
    """This package's own static files, each by a name that changes with its content (so a browser may keep it)."""
    return {p.name: f"{p.name}?v={hashlib.sha256(p.read_bytes()).hexdigest()[:12]}" for p in STATIC.iterdir()}


def _render(template: str, site: Site, **context) -> str:
    return environment.get_template(template).render(site=site, **context)


def gates(report: RunReport) -> dict[str, int]:
    counts = {"pass": 0, "undecided": 0, "fail": 0}
    for c in report.configs:
        counts[c.gate] = counts.get(c.gate, 0) + 1
    return {k: v for k, v in counts.items() if v}


def runs_page(
    site: Site, entries: list[RunEntry], filters: Filters, models: list[str], served: dict[str, Serving]
) -> str:
    rows = []
    for entry in entries:
        report = entry.report
        version = report.mlflow.version
        serving = served.get(entry.model)
        number = serving.number_of(version) if serving and version else None
        rows.append(
            {
                "entry": entry,
                "report": report,
                "gates": gates(report),
                "point": report.selected_point,
                "version": version,
                "serving": number,
                "serving_now": number is not None and serving is not None and number == serving.now,
            }
        )
    more = (
        site.page(
            "/",
            model=filters.model,
            status=filters.status,
            since=filters.since,
            until=filters.until,
            limit=filters.limit * 2,
        )
        if len(entries) == filters.limit
        else ""
    )
    return _render(
        "runs.html.j2",
        site,
        rows=rows,
        filters=filters,
        models=sorted(set(models) | {e.model for e in entries}),
        more=more,
    )


def why_selected(report: RunReport) -> dict | None:
    """The selected config and point, the strategy that picked them, and the faster configs the gate held back."""
    chosen = next((c for c in report.configs if c.key == report.selected), None)
    if chosen is None:
        return None
    point = report.selected_point or chosen.best
    strategy = report.selection or (report.params or {}).get("selection") or "max_throughput"
    budget = (report.params or {}).get("latency_budget_ms")
    held = [c for c in report.configs if c.gate != "pass" and c.best and point and c.best.throughput > point.throughput]
    # like gate.select: the stable points (their windows agreed) of the passing configs, where there are any
    passed = [p for c in report.configs if c.gate == "pass" for p in c.benchmark]
    unstable = sum(1 for p in passed if not p.stable) if any(p.stable for p in passed) else 0
    return {
        "config": chosen,
        "point": point,
        "strategy": strategy,
        "why": WHY.get(strategy, strategy) + (f" ({budget:g} ms)" if strategy.endswith("latency") and budget else ""),
        "held": held,
        "unstable": unstable,
    }


@dataclass
class ConfigView:
    row: ConfigRow
    findings: list[GateFinding]
    other: list[str]  # reasons that are no expectation (a stage that failed)
    tasks: list[tuple[str, str]]  # (name, Airflow task log URL)
    mlflow: str  # the config's MLflow run


def config_views(site: Site, entry: RunEntry) -> list[ConfigView]:
    report = entry.report
    views = []
    for c in report.configs:
        found, other = findings(c)
        views.append(
            ConfigView(
                row=c,
                findings=found,
                other=other,
                tasks=[
                    (name.split("_")[0], site.airflow_task(report.run_id, f"{name}_{c.host_class}", mapped=True))
                    for name in CONFIG_TASKS
                ],
                mlflow=site.mlflow_run(entry.experiment_id, c.mlflow_run_id) if c.mlflow_run_id else "",
            )
        )
    return views


def run_page(site: Site, entry: RunEntry, serving: Serving) -> str:
    report = entry.report
    failed = report.failed_stage or ""
    failed_task = failed if failed in RUN_TASKS else ""
    version = report.mlflow.version
    number = serving.number_of(version) if version else None
    specs = {"latency": charts.latency(report), "batch": charts.batch(report), "accuracy": charts.accuracy(report)}
    tables = (
        [("Per-output figures against the CPU baseline", run_tables.outputs_table(report))] if report.configs else []
    )
    if report.configs:
        tables += [
            ("Throughput", run_tables.throughput_table(report)),
            ("Compile", run_tables.compile_table(report)),
            ("Hosts", run_tables.hosts_table(report)),
        ]
    return _render(
        "run.html.j2",
        site,
        entry=entry,
        report=report,
        configs=config_views(site, entry),
        selected=why_selected(report),
        charts={k: v for k, v in specs.items() if v},
        tables=tables,
        failed_task=site.airflow_task(report.run_id, failed_task) if failed_task else site.airflow_run(report.run_id),
        run_tasks=[(t, site.airflow_task(report.run_id, t)) for t in ("gate", "record", "register", "finalize")],
        data_docs=site.data_docs(entry.mlflow_run_id) if "gate" in entry.artifacts else "",
        serving_number=number,
        serving_uri=serving.uris.get(number, "") if number else "",
        serving_now=number is not None and number == serving.now,
        serving_error=serving.error,
    )


def review(version: VersionEntry) -> tuple[str, str]:
    """(state, what it says) of a version's review: rejected, approved (champion or not), or awaiting review."""
    if version.rejected:
        return "fail", "rejected"
    if version.approved_copy:
        return "pass", f"approved (copy v{version.approved_copy}" + (", champion)" if version.champion else ")")
    return "none", "awaiting review"


def history_page(site: Site, history: History) -> str:
    rows = []
    for v in reversed(history.versions):  # newest first
        report = v.run.report if v.run else None
        config = next((c for c in report.configs if c.key == report.selected), None) if report else None
        point = (report.selected_point if report else None) or (config.best if config else None)
        rows.append(
            {
                "v": v,
                "report": report,
                "config": config,
                "point": point,
                "primary": config.primary if config else None,
                "review": review(v),
            }
        )
    return _render(
        "history.html.j2",
        site,
        history=history,
        rows=rows,
        trend=trend.trend(trend.trend_rows(history.versions)),
        serving_now=next((v for v in history.versions if v.serving_now), None),
    )
