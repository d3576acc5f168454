"""What the Compile reports pages show, read from MLflow and the serving bucket, never from Airflow's database: the
pipeline runs (each parent run's report.json), one run, and a registered model's versions with their reviews and
which one serves.

The report is read into its record (tasks.report.records.RunReport) in one place, :func:`as_record`.
"""

from __future__ import annotations

import json
import tempfile
import typing
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from tasks.core.settings import Settings
from tasks.registry.client import CHAMPION_ALIAS, PIPELINE_RUN_TAG, client
from tasks.registry.review import APPROVED_SUFFIX, REJECTED, REVIEW_TAG, approved_model, registered_models
from tasks.report.records import RunReport
from tasks.serving.layout import layout_for
from tasks.serving.pointer import POINTER_VERSION
from tasks.serving.store import Store

# Heavy, so imported inside the functions that need them (the API server imports the plugin): mlflow, botocore.

REPORT = "report.json"
STATUS_TAG = "pipeline_status"  # set on the parent run with the report (tasks.report.publish)
SCAN = 500  # parent runs looked at for one listing, newest first
_REPORTS: OrderedDict[tuple[str, int], RunReport] = OrderedDict()  # (MLflow run id, report.json's size) -> report
_CACHED = 256


def as_record(raw: dict) -> RunReport | None:
    """The report as its record. A report written before a field was dropped from the record (an older run's) is
    read without the fields the record no longer has; None for one that cannot be read even so."""
    try:
        return RunReport.model_validate(raw)
    except ValidationError:
        pass
    try:
        return RunReport.model_validate(_known(RunReport, raw))
    except ValidationError:
        return None


def _known(model: type[BaseModel], data: Any) -> Any:
    """``data`` without the keys ``model`` (and the records in its fields) does not have."""
    if not isinstance(data, dict):
        return data
    return {name: _value(field.annotation, data[name]) for name, field in model.model_fields.items() if name in data}


def _value(annotation: Any, value: Any) -> Any:
    args = typing.get_args(annotation)
    record = next((a for a in (annotation, *args) if isinstance(a, type) and issubclass(a, BaseModel)), None)
    if record is not None and isinstance(value, dict):
        return _known(record, value)
    origin = typing.get_origin(annotation)
    if origin is list and isinstance(value, list) and args:
        return [_value(args[0], v) for v in value]
    if origin is dict and isinstance(value, dict) and len(args) == 2:
        return {k: _value(args[1], v) for k, v in value.items()}
    for arg in args:  # X | None
        if typing.get_origin(arg) in (list, dict):
            return _value(arg, value)
    return value


@dataclass
class RunEntry:
    """One pipeline run: its parent MLflow run and its report."""

    mlflow_run_id: str
    experiment_id: str
    started: datetime | None
    status: str
    model: str
    report: RunReport
    artifacts: set[str] = field(default_factory=set)  # the parent run's top-level artifact paths


@dataclass(frozen=True)
class Filters:
    model: str = ""
    status: str = ""  # "success" or "failed"
    since: date | None = None
    until: date | None = None  # inclusive
    limit: int = 25


def _experiment_id(tracking, settings: Settings) -> str | None:
    experiment = tracking.get_experiment_by_name(settings.experiment)
    return experiment.experiment_id if experiment is not None else None


def _quoted(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _read_report(tracking, run_id: str, listed) -> RunReport | None:
    """A run's report, or None: a run still in progress (or stopped before finalize) has none yet, and asking
    MLflow for a missing artifact is a server error it retries with backoff for minutes, so the listing decides."""
    entry = next((a for a in listed if a.path == REPORT), None)
    if entry is None:
        return None
    key = (run_id, entry.file_size or 0)
    if key in _REPORTS:
        _REPORTS.move_to_end(key)
        return _REPORTS[key]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            report = as_record(json.loads(Path(tracking.download_artifacts(run_id, REPORT, tmp)).read_text()))
    except Exception:  # noqa: BLE001 - unreadable (the store lost it): the pages show the other runs
        return None
    if report is None:
        return None
    _REPORTS[key] = report
    while len(_REPORTS) > _CACHED:
        _REPORTS.popitem(last=False)
    return report


def _model_of(report: RunReport) -> str:
    return (report.model.name if report.model else "") or (report.params or {}).get("model_name") or ""


def _entry(tracking, run, experiment_id: str) -> RunEntry | None:
    listed = tracking.list_artifacts(run.info.run_id)
    report = _read_report(tracking, run.info.run_id, listed)
    if report is None:
        return None
    started = datetime.fromtimestamp(run.info.start_time / 1000, UTC) if run.info.start_time else None
    return RunEntry(
        mlflow_run_id=run.info.run_id,
        experiment_id=experiment_id,
        started=started,
        status=report.status,
        model=_model_of(report),
        report=report,
        artifacts={a.path for a in listed},
    )


def _search_filter(filters: Filters) -> str:
    clauses = [f"tags.{PIPELINE_RUN_TAG} != ''"]  # parent runs only: the config runs under them have no such tag
    if filters.status:
        clauses.append(f"tags.{STATUS_TAG} = {_quoted(filters.status)}")
    if filters.since:
        clauses.append(f"attributes.start_time >= {_epoch_ms(filters.since)}")
    if filters.until:
        clauses.append(f"attributes.start_time < {_epoch_ms(filters.until + timedelta(days=1))}")
    return " and ".join(clauses)


def _epoch_ms(day: date) -> int:
    return int(datetime.combine(day, time(), UTC).timestamp() * 1000)


def pipeline_runs(settings: Settings, filters: Filters = Filters()) -> list[RunEntry]:
    """The pipeline runs with a report that match ``filters``, newest first, at most ``filters.limit``.

    Status and dates are asked of MLflow; the model is read from the run's params (the record stage logs
    ``model_name``), or from its report for a run that failed before it was recorded."""
    tracking = client(settings)
    experiment_id = _experiment_id(tracking, settings)
    if experiment_id is None:
        return []
    found: list[RunEntry] = []
    token = None
    scanned = 0
    while len(found) < filters.limit and scanned < SCAN:
        page = tracking.search_runs(
            [experiment_id],
            filter_string=_search_filter(filters),
            order_by=["attributes.start_time DESC"],
            max_results=min(100, SCAN - scanned),
            page_token=token,
        )
        scanned += len(page)
        for run in page:
            named = run.data.params.get("model_name")
            if filters.model and named is not None and named != filters.model:
                continue  # another model's run: no report read
            entry = _entry(tracking, run, experiment_id)
            if entry is not None and (not filters.model or entry.model == filters.model):
                found.append(entry)
                if len(found) == filters.limit:
                    break
        token = page.token
        if not token:
            break
    return found


def pipeline_run(settings: Settings, mlflow_run_id: str) -> RunEntry | None:
    """One pipeline run by its parent MLflow run id; None for any other run (a config run, another experiment's)."""
    from mlflow.exceptions import MlflowException

    tracking = client(settings)
    experiment_id = _experiment_id(tracking, settings)
    try:
        run = tracking.get_run(mlflow_run_id)
    except MlflowException:
        return None
    if experiment_id is None or run.info.experiment_id != experiment_id or PIPELINE_RUN_TAG not in run.data.tags:
        return None
    return _entry(tracking, run, experiment_id)


def data_docs_file(settings: Settings, mlflow_run_id: str, path: str) -> bytes | None:
    """A file of the run's GX Data Docs site (logged under ``gate/data_docs/``); None where there is none."""
    from mlflow.exceptions import MlflowException

    parts = path.split("/")
    if (
        not path
        or any(p in ("", ".", "..") or "\\" in p for p in parts)
        or pipeline_run(settings, mlflow_run_id) is None
    ):
        return None
    tracking = client(settings)
    folder = "/".join(["gate", "data_docs", *parts[:-1]])
    try:  # listed first: a missing artifact is a server error MLflow retries for minutes
        if not any(
            a.path == f"{folder}/{parts[-1]}" and not a.is_dir for a in tracking.list_artifacts(mlflow_run_id, folder)
        ):
            return None
        with tempfile.TemporaryDirectory() as tmp:
            return Path(tracking.download_artifacts(mlflow_run_id, f"{folder}/{parts[-1]}", tmp)).read_bytes()
    except MlflowException:
        return None


@dataclass
class Serving:
    """A model's committed serving versions on S3 and the one its runtime's pointer names."""

    uris: dict[int, str] = field(default_factory=dict)  # serving version -> its S3 prefix
    registry_versions: dict[int, str] = field(default_factory=dict)  # serving version -> registry version
    now: int | None = None  # the serving version the pointer names
    error: str = ""  # why S3 could not be read

    def number_of(self, registry_version: str) -> int | None:
        """The newest serving version committed from a registry version."""
        numbers = [n for n, v in self.registry_versions.items() if v == str(registry_version)]
        return max(numbers) if numbers else None


def serving(settings: Settings, model: str) -> Serving:
    """Committed versions (by their commit marker) and the pointer's serving version (its object metadata); where a
    model changed runtime, the pointer written last."""
    try:
        store = Store(settings, model)
        manifests = store.committed()
        pointers = set()
        for manifest in manifests.values():
            try:
                pointers.add(
                    layout_for(manifest["target"], [f["artifact_path"] for f in manifest["files"]]).pointer_file
                )
            except (KeyError, ValueError):
                continue  # a manifest of a target this deployment no longer knows: no pointer of it to read
        heads = []
        for pointer in pointers:
            try:
                heads.append(store.client.head_object(Bucket=store.bucket, Key=store.root + pointer))
            except Exception:  # noqa: BLE001 - no pointer of that runtime (yet)
                continue
        latest = max(heads, key=lambda h: h["LastModified"], default=None)
        now = int(latest.get("Metadata", {}).get(POINTER_VERSION, "0")) if latest else None
        return Serving(
            uris={n: store.uri(f"{n}/") for n in manifests},
            registry_versions={n: str(m["mlflow"]["version"]) for n, m in manifests.items()},
            now=now or None,
        )
    except Exception as exc:  # noqa: BLE001 - the pages still show the runs without S3 (e.g. bucket unreachable)
        return Serving(error=str(exc)[:300])


def manifest(settings: Settings, model: str, number: int) -> dict | None:
    try:
        return Store(settings, model).read_json(f"{number}/manifest.json")
    except Exception:  # noqa: BLE001 - no such model or bucket: nothing to show
        return None


@dataclass
class VersionEntry:
    """One registered version: its tags, its pipeline run's report, its review and its serving."""

    version: str
    created: datetime | None
    tags: dict[str, str]
    aliases: list[str]
    run: RunEntry | None
    approved_copy: str | None = None  # its copy's version in <model>.approved
    champion: bool = False  # that copy holds alias champion
    rejected: bool = False
    serving_number: int | None = None  # the serving version it was committed as
    serving_now: bool = False


@dataclass
class History:
    model: str
    versions: list[VersionEntry]  # oldest first
    serving: Serving
    runs_without_version: int = 0  # pipeline runs of the model that registered nothing (failed, or no config passed)


def model_history(settings: Settings, name: str) -> History:
    """Every registered version of ``name``, oldest first, with its pipeline run's report (found by the pipeline-run
    tag the version and its parent run share), its review and its serving."""
    from mlflow.exceptions import MlflowException

    tracking = client(settings)
    try:
        versions = tracking.search_model_versions(f"name = {_quoted(name)}")
    except MlflowException:
        versions = []
    try:
        copies = tracking.search_model_versions(f"name = {_quoted(approved_model(name))}")
        champion = tracking.get_registered_model(approved_model(name)).aliases.get(CHAMPION_ALIAS)
    except MlflowException:
        copies, champion = [], None
    runs = {r.report.run_id: r for r in pipeline_runs(settings, Filters(model=name, limit=SCAN))}
    served = serving(settings, name)
    entries = []
    for v in sorted(versions, key=lambda v: int(v.version)):
        copy = next((c for c in copies if c.source == f"models:/{name}/{v.version}"), None)
        number = served.number_of(v.version)
        entries.append(
            VersionEntry(
                version=str(v.version),
                created=datetime.fromtimestamp(v.creation_timestamp / 1000, UTC) if v.creation_timestamp else None,
                tags=dict(v.tags or {}),
                aliases=list(v.aliases or []),
                run=runs.get((v.tags or {}).get(PIPELINE_RUN_TAG)),
                approved_copy=str(copy.version) if copy else None,
                champion=copy is not None and str(champion) == str(copy.version),
                rejected=REJECTED
                in ((v.tags or {}).get(REVIEW_TAG), (copy.tags or {}).get(REVIEW_TAG) if copy else None),
                serving_number=number,
                serving_now=number is not None and number == served.now,
            )
        )
    registered_runs = {e.tags.get(PIPELINE_RUN_TAG) for e in entries}
    return History(
        model=name,
        versions=entries,
        serving=served,
        runs_without_version=sum(1 for run_id in runs if run_id not in registered_runs),
    )


def model_names(settings: Settings) -> list[str]:
    """The registered models the pipeline made (their approved copies left out), for the runs page's filter."""
    try:
        return sorted(m.name for m in registered_models(client(settings)) if not m.name.endswith(APPROVED_SUFFIX))
    except Exception:  # noqa: BLE001 - the filter still takes a typed name
        return []
