"""The Compile reports pages (tasks/report/ui): what they read from MLflow, and what they show of a run.

The browser test in test_dags.py opens them in Airflow's own UI after a real pipeline run; here they are read and
rendered from reports made for the purpose, so each property is checked by itself."""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime, timedelta
from html.parser import HTMLParser

import mlflow
import pytest

from tasks.core.settings import load as load_settings
from tasks.registry.client import PIPELINE_RUN_TAG, client, experiment_id_of
from tasks.report.ui import charts, collect, pages
from tasks.report.ui.findings import findings

MODEL = "pages-model"


def _point(batch: int, streams: int, throughput: float, p99: float) -> dict:
    return {"batch_size": batch, "concurrency": streams, "throughput": throughput, "latency_ms_p50": p99 / 2,
            "latency_ms_p90": p99 * 0.8, "latency_ms_p99": p99, "iterations": 50}  # fmt: skip


def _config(key: str, gate: str, points: list[dict], top5_agreement: float, **row) -> dict:
    output = {"name": "logits", "class_scores": True, "top1_delta": 0.4, "top5_delta": -0.4, "top1_agreement": 0.95,
              "top1_in_top5": 1.0, "top1_probability_shift": 0.02, "top5_agreement": top5_agreement,
              "rule": "class scores", "intervals": {"top1_agreement": (0.91, 0.98), "top5_delta": (-1.2, 0.0)}}  # fmt: skip
    target, precision = key.split("-")
    return {"key": key, "target": target, "precision": precision, "compile_status": "ok", "outputs": [output],
            "benchmark": points, "throughput": max(p["throughput"] for p in points),
            "latency_ms": {"p50": 1.0, "p90": 1.0, "p99": points[-1]["latency_ms_p99"]}, "gate": gate, **row}  # fmt: skip


FAILED_TOP5 = {"figure": "top5_agreement", "output": "logits", "observed": 0.6988, "comparison": ">=",
               "threshold": 0.9, "params": ["min_top5_agreement"], "verdict": "fail"}  # fmt: skip


def _report(run_id: str = "manual__2026-12-03T10:00:00+00:00", model: str = MODEL, status: str = "success") -> dict:
    """A report as the report stage writes it: an int8 config that fails the top-5 floor, an fp32 one selected."""
    fp32 = [_point(1, 1, 110.0, 16.0), _point(4, 2, 220.0, 40.0), _point(8, 2, 260.0, 70.0)]
    int8 = [_point(1, 1, 170.0, 11.0), _point(4, 2, 400.0, 25.0), _point(8, 2, 420.0, 60.0)]
    return {
        "run_id": run_id,
        "status": status,
        "params": {"model_name": model, "batch_sizes": [1, 4, 8], "min_top5_agreement": 0.9, "top5_tolerance_pp": 1.0},
        "model": {"name": model, "framework": "pytorch", "architecture": "mobilenet_v2", "parameters": 3504872},
        "configs": [
            _config("onnxruntime-fp32", "pass", fp32, 1.0),
            _config(
                "onnxruntime-int8",
                "fail",
                int8,
                0.6988,
                gate_findings=[FAILED_TOP5],
                gate_reasons=[
                    "expect_column_values_to_be_between top5_agreement >= 0.9 (param min_top5_agreement): observed 0.6988"
                ],
            ),
        ],  # fmt: skip
        "skipped_targets": {"neuron-inf1": "tensorflow-neuron is not installed"},
        "selected": "onnxruntime-fp32",
        "selected_point": fp32[2],
        "selection": "max_throughput",
        "mlflow": {
            "tracking_uri": "http://mlflow",
            "experiment": "e",
            "registered_model": model,
            "version": "1",
            "alias": "candidate",
        },  # fmt: skip
    }


def _entry(report: dict, mlflow_run_id: str = "a" * 32) -> collect.RunEntry:
    record = collect.as_record(report)
    return collect.RunEntry(
        mlflow_run_id, "1", datetime(2026, 12, 3, tzinfo=UTC), record.status, MODEL, record, {"gate"}
    )


def _site() -> pages.Site:
    return pages.Site(root="/compile-reports", airflow="", settings=load_settings(), static={
        "reports.css": "reports.css", "reports.js": "reports.js", "vega": "vega.js"})  # fmt: skip


def test_a_failed_expectation_reads_the_same_from_its_record_and_from_an_older_reports_sentence():
    (recorded,), _ = findings(collect.as_record(_report()).configs[1])
    old = _report()
    del old["configs"][1]["gate_findings"]  # a report from before the records: only the gate's sentence
    (read,), other = findings(collect.as_record(old).configs[1])
    assert recorded == read and other == []
    assert (read.label, read.observed_text, read.threshold_text, read.param) == (
        "top-5 set agreement", "0.699", ">= 0.900", "min_top5_agreement"
    )  # fmt: skip
    undecided = collect.as_record({**old, "configs": [{**old["configs"][1], "gate": "undecided", "gate_reasons": [
        "top1_agreement 0.93, 95 % interval [0.89, 0.98] reaches past 0.9 (param min_top1_agreement): the validation "
        "set cannot resolve +-0.045; give more samples"]}]})  # fmt: skip
    ((finding,), _) = findings(undecided.configs[0])
    assert (finding.verdict, finding.interval, finding.comparison) == ("undecided", (0.89, 0.98), ">=")


def test_a_report_written_before_a_field_moved_still_reads():
    old = _report()
    old["configs"][0] |= {"top1_delta": 0.0, "intervals": {}, "nonfinite_outputs": 0}  # per-config figures, once
    assert collect.as_record(old).configs[0].primary.top1_agreement == 0.95


def test_the_latency_chart_draws_every_point_the_pareto_front_and_the_selected_point():
    report = collect.as_record(_report())
    spec = charts.latency(report)
    layers = {layer.get("name"): layer for layer in spec["layer"]}
    assert len(layers["points"]["data"]["values"]) == 6
    # the front of the configs that passed: fp32 only (int8 failed), by latency
    assert [p["throughput"] for p in layers["pareto"]["data"]["values"]] == [110.0, 220.0, 260.0]
    (selected,) = layers["selected"]["data"]["values"]
    assert (selected["config"], selected["batch_size"], selected["throughput"]) == ("onnxruntime-fp32", 8, 260.0)
    assert charts.pareto([{"p99": 1, "throughput": 5}, {"p99": 2, "throughput": 4}, {"p99": 3, "throughput": 9}]) == [
        {"p99": 1, "throughput": 5}, {"p99": 3, "throughput": 9}
    ]  # fmt: skip


def test_the_batch_chart_is_on_the_batch_sizes_swept_and_the_accuracy_chart_on_the_params_thresholds():
    report = collect.as_record(_report())
    batch = charts.batch(report)
    x = batch["layer"][0]["encoding"]["x"]
    assert x["axis"]["values"] == [1, 4, 8] and x["scale"]["type"] == "log"
    accuracy = charts.accuracy(report)
    thresholds = {  # Altair numbers the layers of concatenated panels: threshold_<figure>_<n>
        layer["name"].removeprefix("threshold_").rsplit("_", 1)[0]: layer["data"]["values"][0]["threshold"]
        for panel in accuracy["concat"]
        for layer in panel["layer"]
        if layer.get("name", "").startswith("threshold_")
    }
    assert thresholds["top5_agreement"] == 0.9  # the run's own floor, not the default (0: unjudged)
    assert thresholds["top5_delta"] == -1.0  # -top5_tolerance_pp
    statuses = json.dumps(accuracy)
    assert '"status": "fails"' in statuses and '"status": "undecided"' in statuses  # int8's top-5; the intervals


def test_the_run_page_shows_the_selected_config_the_failed_expectation_and_the_links():
    site = _site()
    page = pages.run_page(site, _entry(_report()), collect.Serving(uris={3: "s3://b/pages-model/3/"},
                          registry_versions={3: "1"}, now=3))  # fmt: skip
    assert 'id="selected" data-config="onnxruntime-fp32"' in page
    row = re.search(
        r'<tr class="finding" data-config="onnxruntime-int8" data-figure="top5_agreement".*?</tr>', page, re.S
    )
    cells = [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row.group(0), re.S)]
    assert cells[2:7] == ["top-5 set agreement", "logits", "0.699", "&gt;= 0.900", "min_top5_agreement"]
    airflow_run = "/dags/compile_pipeline/runs/manual__2026-12-03T10%3A00%3A00%2B00%3A00"
    assert f'href="{airflow_run}" target="_top"' in page
    assert f'href="{airflow_run}/tasks/compile_config_cpu/mapped" target="_top"' in page
    assert 'href="/compile-reports/runs/' + "a" * 32 + '/data-docs/index.html"' in page
    assert 'href="/compile-reports/models/pages-model/serving/3"' in page and "serving now" in page
    assert "neuron-inf1" in page and "tensorflow-neuron is not installed" in page
    assert {"spec-latency", "spec-batch", "spec-accuracy"} <= set(re.findall(r'id="(spec-\w+)"', page))


def test_the_runs_and_history_pages_list_what_they_are_given():
    site, entry = _site(), _entry(_report())
    runs = pages.runs_page(site, [entry], collect.Filters(model=MODEL), [MODEL], {MODEL: collect.Serving()})
    assert f'data-run-id="{entry.report.run_id}"' in runs and '<option value="pages-model" selected>' in runs
    version = collect.VersionEntry("1", None, {PIPELINE_RUN_TAG: entry.report.run_id}, ["candidate"], entry,
                                   approved_copy="1", champion=True, serving_number=3, serving_now=True)  # fmt: skip
    history = collect.History(
        MODEL, [version], collect.Serving(uris={3: "s3://b/m/3/"}, registry_versions={3: "1"}, now=3)
    )
    page = pages.history_page(site, history)
    assert "v1 serves now" in page and "approved (copy v1, champion)" in page and 'id="spec-trend"' in page


def _log_run(settings, report: dict, model_param: str | None, started_offset_days: int = 0) -> str:
    tracking = client(settings)
    run = tracking.create_run(
        experiment_id_of(settings), tags={PIPELINE_RUN_TAG: report["run_id"], "pipeline_status": report["status"]},
        start_time=int((datetime.now(UTC) + timedelta(days=started_offset_days)).timestamp() * 1000),
    )  # fmt: skip
    if model_param:
        tracking.log_param(run.info.run_id, "model_name", model_param)
    tracking.log_text(run.info.run_id, json.dumps(report), "report.json")
    tracking.log_text(run.info.run_id, "<html>docs</html>", "gate/data_docs/index.html")
    tracking.set_terminated(run.info.run_id)
    return run.info.run_id


@pytest.mark.integration
def test_a_run_without_a_report_is_left_out_without_asking_mlflow_for_it(local_services, monkeypatch):
    """Asking MLflow for a missing artifact is a server error it retries with backoff for minutes: the pages
    look first (a run still in progress, or stopped before finalize, has no report.json)."""
    tracking = client(local_services)
    run = tracking.create_run(experiment_id_of(local_services), tags={PIPELINE_RUN_TAG: "no-report-yet"})
    tracking.set_terminated(run.info.run_id)
    asked = []
    download = mlflow.MlflowClient.download_artifacts
    monkeypatch.setattr(
        mlflow.MlflowClient,
        "download_artifacts",
        lambda self, run_id, path, dst=None: asked.append(run_id) or download(self, run_id, path, dst),
    )
    rows = collect.pipeline_runs(local_services, collect.Filters(limit=200))
    assert run.info.run_id not in {row.mlflow_run_id for row in rows}
    assert run.info.run_id not in asked
    assert collect.pipeline_run(local_services, run.info.run_id) is None


@pytest.mark.integration
def test_runs_are_found_by_model_status_and_date_and_their_gate_docs_only_by_their_own_paths(local_services):
    ok = _log_run(local_services, _report("pages-ok", "pages-a"), "pages-a")
    # failed before it was recorded: no params, the model only in its report
    failed = _log_run(local_services, _report("pages-failed", "pages-b", status="failed"), None)
    old = _log_run(local_services, _report("pages-old", "pages-a"), "pages-a", started_offset_days=-30)

    def found(**filters) -> set[str]:
        rows = collect.pipeline_runs(local_services, collect.Filters(limit=200, **filters))
        return {row.mlflow_run_id for row in rows} & {ok, failed, old}

    assert found() == {ok, failed, old}
    assert found(model="pages-a") == {ok, old} and found(model="pages-b") == {failed}
    assert found(status="failed") == {failed} and found(status="success") == {ok, old}
    today = datetime.now(UTC).date()
    assert found(since=today - timedelta(days=1)) == {ok, failed}
    assert found(until=today - timedelta(days=10)) == {old} and found(since=date(2999, 1, 1)) == set()
    entry = collect.pipeline_run(local_services, ok)
    assert entry.model == "pages-a" and entry.report.selected == "onnxruntime-fp32" and "gate" in entry.artifacts
    assert collect.data_docs_file(local_services, ok, "index.html") == b"<html>docs</html>"
    for outside in ("../report.json", "../../report.json", "/etc/passwd", "", "a/../../report.json"):
        assert collect.data_docs_file(local_services, ok, outside) is None, outside


@pytest.mark.integration
def test_a_models_history_has_every_version_with_its_run_and_review(local_services):
    run_id = _log_run(local_services, _report("pages-history", "pages-h"), "pages-h")
    tracking = client(local_services)
    tracking.create_registered_model("pages-h")
    run = tracking.get_run(run_id)
    for tags in ({PIPELINE_RUN_TAG: "pages-history"}, {PIPELINE_RUN_TAG: "gone", "review": "rejected"}):
        tracking.create_model_version("pages-h", f"{run.info.artifact_uri}/gate", run_id=run_id, tags=tags)
    history = collect.model_history(local_services, "pages-h")
    first, second = history.versions
    assert first.run is not None and first.run.mlflow_run_id == run_id and not first.rejected
    assert second.run is None and second.rejected and not first.serving_now
    assert pages.review(second) == ("fail", "rejected") and pages.review(first) == ("none", "awaiting review")
    page = pages.history_page(_site(), history)
    assert 'data-version="1"' in page and 'data-version="2"' in page and "No version serves yet" in page


@pytest.mark.reliability
def test_the_reports_pages_show_html_in_any_field_as_text(reliability):
    """Every name and reason comes from user input or files a user wrote: shown as text, never as markup."""
    reliability.bad_inputs += 1
    hostile = "<script>alert(1)</script><img src=x onerror=alert(2)>'\"&"
    report = _report(run_id=hostile)
    report["failed_stage"] = report["error"] = hostile
    report["status"] = "failed"
    report["skipped_targets"] = {hostile: hostile}
    report["configs"][1]["gate_reasons"] = [hostile]
    report["configs"][1]["outputs"][0]["name"] = hostile

    class Elements(HTMLParser):
        def __init__(self):
            super().__init__()
            self.tags, self.handlers, self.text = [], [], []

        def handle_starttag(self, tag, attrs):
            self.tags.append((tag, dict(attrs)))
            self.handlers += [name for name, _ in attrs if name.startswith("on")]

        def handle_data(self, data):
            self.text.append(data)

    site, entry = _site(), _entry(report)
    run_page = pages.run_page(site, entry, collect.Serving())
    for html, shown in ((run_page, 5), (pages.runs_page(site, [entry], collect.Filters(), [], {}), 1)):
        page = Elements()
        page.feed(html)
        scripts = [attrs for tag, attrs in page.tags if tag == "script"]
        # only this app's own scripts and the charts' specs (JSON, not run)
        assert all(s.get("src", "").startswith("/compile-reports/static/") or s.get("type") == "application/json"
                   for s in scripts), scripts  # fmt: skip
        assert "img" not in [tag for tag, _ in page.tags] and page.handlers == []
        assert "".join(page.text).count(hostile) >= shown  # as text: run id, error, stage, reasons, targets
