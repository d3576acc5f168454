"""The DAG itself: it parses cleanly and light, and `airflow dags test` runs the whole pipeline."""

import base64
import json
import os
import secrets
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import pytest
from conftest import free_port

from devtools.demo import airflow_env, approve_and_promote, run_pipeline
from devtools.services import wait_until_answering
from tasks import targets
from tasks.core.cpu import has_native_bf16
from tasks.core.settings import PROJECT_ROOT
from tasks.core.settings import load as load_settings
from tasks.core.storage import s3_client
from tasks.report.publish import summary
from tasks.report.records import RunReport
from tasks.serving.store import Store

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"  # Debian's, installed by make test
ARTIFACTS = PROJECT_ROOT / "test-artifacts"  # screenshots of the browser test
HEAVY_MODULES = ("torch", "tensorflow", "openvino", "onnxruntime", "mlflow", "onnx", "sklearn", "skimage")


def test_dag_files_import_without_errors():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(PROJECT_ROOT / "dags"))
    assert bag.import_errors == {}
    dag = bag.dags["compile_pipeline"]
    assert {"start", "export", "plan", "gate", "record", "register", "finalize"} <= set(dag.task_dict)
    assert "promote" not in dag.task_dict  # only what a reviewer approves goes to S3 (promote_model)
    assert dag.task_dict["plan"].queue == "compile"  # target availability is judged on the compile fleet
    # One chain per host class, each on the queues its targets declare: compiles in a pool of slots on the class's
    # compile queue; its baseline, validations and benchmarks on its own hosts. No per-DAG cap: one sweep at a
    # time per host (tasks.benchmark.host_lock), so N hosts sweep N configs at once.
    classes = targets.host_classes()
    assert classes == {"cpu": "compile", "inf1": "compile", "inf2": "compile", "gpu": "gpu"}
    for host_class, compile_queue in classes.items():
        compile_task = dag.task_dict[f"compile_config_{host_class}"]
        assert (compile_task.queue, compile_task.pool, compile_task.retries) == (compile_queue, "compiler_slots", 2)
        for stage in ("baseline", "validate", "benchmark"):
            assert dag.task_dict[f"{stage}_{host_class}"].queue == host_class
            assert dag.task_dict[f"{stage}_{host_class}"].max_active_tis_per_dag is None
        # a class without configs skips its tasks instead of queueing them where no worker may listen
        assert {f"compile_config_{host_class}", f"baseline_{host_class}"} <= dag.task_dict[
            f"route_{host_class}"
        ].downstream_task_ids
        # sweeps measure a quiet host: the baseline's after the class's compiles, the configs' after its validations
        assert f"compile_config_{host_class}" in dag.task_dict[f"baseline_{host_class}"].upstream_task_ids
        assert f"validate_{host_class}" in dag.task_dict[f"benchmark_{host_class}"].upstream_task_ids
    assert dag.task_dict["register"].retries == 3
    # chained by Assets: retrain_to_deploy -> model_exported -> compile_pipeline -> model_registered -> promote_model
    assert [a.name for a in dag.timetable.asset_condition.objects] == ["model_exported"]
    assert [a.name for a in dag.task_dict["register"].outlets] == ["model_registered"]
    retrain = bag.dags["retrain_to_deploy"]
    assert [a.name for a in retrain.task_dict["train_and_export"].outlets] == ["model_exported"]
    assert retrain.timetable.expression == "0 3 * * 1"
    promote = bag.dags["promote_model"]
    assert (
        promote.catchup is False and promote.timetable.timetable.expression == "*/10 * * * *"
    )  # polls for new champions
    assert [a.name for a in promote.timetable.asset_condition.objects] == ["model_registered"]
    assert set(promote.task_dict) == {"find", "promote"} | {
        f"{task}_{host_class}" for host_class in classes for task in ("route", "smoke_test", "serve")
    }
    assert promote.task_dict["promote"].retries == 3
    for host_class in classes:  # a promoted version is smoke-tested on the hosts its target runs on
        assert promote.task_dict[f"smoke_test_{host_class}"].queue == host_class
        assert promote.task_dict[f"smoke_test_{host_class}"].retries == 0


@pytest.mark.parametrize("dag_file", ["compile_pipeline.py", "promote_model.py", "retrain_to_deploy.py"])
def test_dag_parse_imports_no_heavy_framework(dag_file):
    probe = (
        "import sys, time, runpy; t = time.perf_counter(); "
        f"runpy.run_path({str(PROJECT_ROOT / 'dags' / dag_file)!r}); "
        "import json; print(json.dumps({'seconds': time.perf_counter() - t, "
        f"'heavy': [m for m in {HEAVY_MODULES!r} if m in sys.modules]}}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], env=airflow_env(load_settings()), capture_output=True, text=True, check=True
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []  # what keeps parsing fast (a timed assertion would be flaky on a shared machine)
    assert result["seconds"] < 30  # Airflow's dagbag_import_timeout: past it the file is an import error


@pytest.fixture(scope="module")
def e2e_run(local_services):
    """One full compile_pipeline run through airflow dags test: (exit code, report path)."""
    conf = {
        "model_name": "mobilenet-e2e",
        "batch_sizes": [1, 4],
        "max_concurrency": 2,
        "benchmark_window_s": 0.3,
        "calibration_samples": 96,  # a third of the default: int8 passes on it, at a third of the quantiser's time
        "targets": ["onnxruntime", "openvino", "neuron-inf1"],
    }
    code, report_path = run_pipeline(local_services, conf)
    assert code == 0 and report_path is not None
    # nothing reaches S3 until a reviewer approves; then promote_model commits, smoke-tests and serves it
    keys_before_review = Store(local_services, "mobilenet-e2e").keys("")
    promote_code = approve_and_promote(local_services, RunReport.model_validate_json(Path(report_path).read_text()))
    return report_path, keys_before_review, promote_code


def primary(config: dict) -> dict:
    """A report config's figures of the output one-figure summaries show: its class scores, else its first output."""
    return next((o for o in config["outputs"] if o["class_scores"]), config["outputs"][0])


@pytest.mark.integration
@pytest.mark.slow
def test_airflow_dags_test_runs_the_pipeline_end_to_end(local_services, e2e_run):
    report_path, keys_before_review, promote_code = e2e_run
    report = json.loads(Path(report_path).read_text())
    assert report["status"] == "success"
    bf16 = has_native_bf16()  # else the plan skips bf16 and says why
    assert [c["key"] for c in report["configs"]] == [
        "onnxruntime-fp32", "onnxruntime-int8", "openvino-fp32", *(["openvino-bf16"] if bf16 else []), "openvino-int8"
    ]  # fmt: skip
    assert bf16 or "this CPU has no bf16 support" in report["skipped_targets"]["openvino-bf16"]
    for config in report["configs"]:
        assert config["gate"] in ("pass", "fail", "undecided")
        assert config["throughput"] > 0 and config["latency_ms"]["p99"] >= config["latency_ms"]["p50"]
        assert config["benchmark_seconds"] > 0  # its sweep's wall time, summed in the demo summary
        assert {p["batch_size"] for p in config["benchmark"]} == {1, 4}
        assert primary(config)["top5_agreement"] is not None and len(config["artifact_sha256"]) == 64
        assert config["compile_report"]["operators_total"] > 0 and config["compile_peak_memory_mb"] > 0
    assert "tensorflow-neuron is not installed" in report["skipped_targets"]["neuron-inf1"]
    assert report["model"]["model_code"] == ""  # a state dict: weights only, and the report says so
    assert "Code from the model file: none" in Path(report_path).with_suffix(".md").read_text()
    swept = report["baseline"]["benchmark_seconds"] + sum(c["benchmark_seconds"] for c in report["configs"])
    typed = RunReport.model_validate(report)
    assert f"benchmark stages (baseline and every config): {swept:.1f} s" in summary(typed, Path(report_path))
    # as make demo calls it: the path as a string (a run-store URI elsewhere); the last line names the report
    assert summary(typed, str(report_path)).splitlines()[-1] == f"report: {Path(report_path).resolve()}"
    fp32 = next(c for c in report["configs"] if c["key"] == "openvino-fp32")
    assert primary(fp32)["top5_delta"] == 0 and primary(fp32)["max_abs_diff"] < 1e-3 and fp32["gate"] == "pass"
    # NNCF's int8, with its bias correction, keeps the top class and the scores in ONNX Runtime as in OpenVINO (ONNX
    # Runtime's own quantiser changed the top class of a quarter of the photos: calibration_method MinMax)
    # On 6 photos a 0.93 top-1 agreement cannot be told from the 0.9 floor (its interval reaches 0.89): undecided,
    # not passed, and the reason says what would decide it
    for key in ("onnxruntime-int8", "openvino-int8"):
        int8 = next(c for c in report["configs"] if c["key"] == key)
        figures = primary(int8)
        assert figures["top1_agreement"] >= 0.9 and figures["top1_in_top5"] >= 0.99, int8
        assert int8["gate"] == "pass" or (int8["gate"] == "undecided" and "cannot resolve" in int8["gate_reasons"][0])
        low, high = figures["intervals"]["top1_agreement"]
        assert low <= figures["top1_agreement"] <= high
        assert "convolutions and matmuls quantised (NNCF" in int8["compile_report"]["notes"][0]
    assert report["selected_point"]["concurrency"] >= 1
    assert report["machine"]["peak_gflops"]["fp32"] > 0 and report["model"]["flops_per_sample"] == 601548544
    assert report["baseline"]["top5"] > 0.8 and report["baseline"]["probe_top5"][0]["class_id"] in {281, 282, 285}

    client = mlflow.MlflowClient(local_services.mlflow_tracking_uri)
    candidate = client.get_model_version_by_alias("mobilenet-e2e", "candidate")
    assert candidate.version == report["mlflow"]["version"]
    assert candidate.tags["target"] == report["selected"].split("-")[0]
    parent = client.get_run(report["mlflow"]["run_id"])
    assert parent.data.tags["pipeline_status"] == "success"
    assert {"report.json", "report.html", "gate", "plots"} <= {
        a.path for a in client.list_artifacts(parent.info.run_id)
    }
    page = Path(report_path).with_name("report.html").read_text()
    assert page.count("<img") == 2 and "tuned / naive" in page
    gate_files = {a.path for a in client.list_artifacts(parent.info.run_id, "gate")}
    assert {"gate/validation_result.json", "gate/data_docs"} <= gate_files

    store = Store(local_services, "mobilenet-e2e")
    assert keys_before_review == [] and promote_code == 0
    ((number, manifest),) = store.committed().items()
    assert manifest["mlflow"]["version"] == candidate.version and manifest["mlflow"]["run_id"] == candidate.run_id
    runtime_config = "config.json" if manifest["runtime"] == "openvino-model-server" else "config.pbtxt"
    assert {f"{number}/manifest.json", runtime_config, f"k8s/{number}.yaml"} <= set(store.keys(""))
    assert client.get_model_version("mobilenet-e2e", candidate.version).tags["promoted_version"] == str(number)


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.scenario  # a whole pipeline run (100 s), out of CI for time: embeddings are judged in the unit tests
def test_data_without_labels_is_recorded_registered_and_reported_with_accuracy_n_a(local_services):
    """The built-in text encoder on its sentences: embeddings, no labels, judged by closeness alone."""
    conf = {"model_name": "text-embeddings", "model_uri": "builtin:text_encoder", "dataset": "builtin:text",
            "targets": ["onnxruntime"], "precisions": ["fp32"], "batch_sizes": [1, 8], "max_concurrency": 2,
            "benchmark_window_s": 0.3}  # fmt: skip
    code, report_path = run_pipeline(local_services, conf)
    assert code == 0 and report_path is not None
    report = json.loads(Path(report_path).read_text())
    assert report["status"] == "success" and report["dataset"]["labelled"] is False
    (config,) = report["configs"]
    assert config["gate"] == "pass" and config["top1"] is None and primary(config)["cosine_min"] > 0.9999
    assert [(o["name"], o["class_scores"]) for o in config["outputs"]] == [("logits", False)]
    accuracy_rows = [
        line for line in Path(report_path).with_suffix(".md").read_text().splitlines() if "| n/a |" in line
    ]
    assert len(accuracy_rows) == 2  # the baseline and the config: accuracy n/a, never a crash

    client = mlflow.MlflowClient(local_services.mlflow_tracking_uri)
    candidate = client.get_model_version_by_alias("text-embeddings", "candidate")
    assert candidate.version == report["mlflow"]["version"] and candidate.tags["validation"] == "pass"
    parent = client.get_run(report["mlflow"]["run_id"]).data
    assert "baseline_top1" not in parent.metrics and parent.metrics["baseline_throughput"] > 0


@pytest.mark.integration
@pytest.mark.scenario  # 53 s, out of CI for time; export's refusal of missing and damaged files is in test_bad_inputs
def test_a_missing_model_file_fails_the_run_at_export_and_nothing_is_registered_or_promoted(local_services, tmp_path):
    conf = {"model_name": "broken-model", "model_uri": str(tmp_path / "missing.pt"), "batch_sizes": [1]}
    code, report_path = run_pipeline(local_services, conf)
    assert code != 0
    report = json.loads(Path(report_path).read_text())
    assert report["status"] == "failed" and report["failed_stage"] == "export"
    assert "missing.pt does not exist" in report["error"]
    client = mlflow.MlflowClient(local_services.mlflow_tracking_uri)
    assert client.search_model_versions("name = 'broken-model'") == []
    listing = s3_client(local_services).list_objects_v2(
        Bucket=local_services.serving_bucket, Prefix=f"{local_services.serving_prefix}/broken-model/"
    )
    assert listing.get("KeyCount", 0) == 0


@pytest.mark.integration
@pytest.mark.scenario  # 28 s, out of CI for time; the params' schema and the plan refuse it in tests/unit/stages
def test_an_unknown_target_is_refused_before_any_work(local_services):
    code, report_path = run_pipeline(local_services, {"targets": ["tensorrtx"], "batch_sizes": [1]})
    assert code != 0 and report_path is None  # refused at trigger time by the param schema
    log = (local_services.home / "demo" / "airflow-dags-test.log").read_text()
    assert "tensorrtx" in log


@pytest.mark.integration
@pytest.mark.scenario  # 70 s, out of CI for time; Airflow standalone's Asset-chain scenario runs this DAG too
def test_retrain_to_deploy_emits_one_model_exported_event_with_what_compile_needs(local_services):
    from devtools.demo import airflow, ensure_airflow_db
    from tasks.core.files import local_path, this_host
    from tasks.stages.compile_pipeline.start import params_from_event

    log = local_services.home / "demo" / "retrain.log"
    ensure_airflow_db(local_services, log)
    probe = (
        "import json; from airflow.utils.session import create_session; from airflow.models.asset import AssetEvent;"
        "from sqlalchemy import select\n"
        "with create_session() as s:\n"
        "    print(json.dumps([e.extra for e in s.scalars(select(AssetEvent).where("
        "AssetEvent.source_dag_id == 'retrain_to_deploy').order_by(AssetEvent.id)).all()]))"
    )

    def events() -> list[dict]:
        out = subprocess.run(
            [sys.executable, "-c", probe], env=airflow_env(local_services), capture_output=True, text=True, check=True
        )
        return json.loads(out.stdout.strip().splitlines()[-1])

    before = events()  # other tests of the session may have retrained already
    assert airflow(["dags", "test", "retrain_to_deploy"], local_services, log) == 0
    after = events()
    assert after[: len(before)] == before
    (extra,) = after[len(before) :]  # exactly one event from this run
    assert extra["framework"] == "tensorflow" and len(extra["sha256"]) == 64
    assert extra["inputs"] == [{"name": "image", "shape": ["batch", 8, 8, 1], "dtype": "float32"}]
    # put in the run store (here a file:// one, naming this host), where compile_pipeline's export reads it
    assert extra["model_uri"].startswith(f"file://{this_host()}/")
    assert (local_path(extra["model_uri"]) / "saved_model.pb").is_file()
    # what compile_pipeline's start makes of it: the event's model and compile params over the form's defaults
    params = params_from_event(
        {"model_name": "mobilenet_v2", "dataset": "builtin:photos", "top5_tolerance_pp": 1.0}, extra
    )
    assert params["model_uri"] == extra["model_uri"] and params["model_name"] == "keras-digits"
    assert params["dataset"] == "builtin:digits" and params["top5_tolerance_pp"] == 1.0


# name: (role, password). "outsider" logs in but has no role: the auth manager denies it everything.
UI_USERS = {"admin": ("admin", "admin-pw"), "reviewer": ("viewer", "reviewer-pw"), "outsider": ("", "outsider-pw")}
READERS = ("admin", "reviewer")
JWT_SECRET = secrets.token_hex(32)  # the test API server's signing key


@pytest.fixture(scope="module")
def airflow_ui(local_services):
    """Airflow's API server (UI, REST API, plugins) on a free port with the project's plugins and real logins
    (the simple auth manager: an admin and a viewer); stopped after."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    home = local_services.home / "demo"
    home.mkdir(parents=True, exist_ok=True)
    passwords = home / "ui-passwords.json"
    passwords.write_text(json.dumps({name: password for name, (_, password) in UI_USERS.items()}))
    env = {**airflow_env(local_services),
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{n}:{r}" for n, (r, _) in UI_USERS.items()),
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
           "AIRFLOW__API__BASE_URL": url,
           "AIRFLOW__API_AUTH__JWT_SECRET": JWT_SECRET,
           "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}  # fmt: skip
    log = home / "api-server.log"
    server = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "airflow"), "api-server", "--port",
                               str(port)], env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                              start_new_session=True)  # fmt: skip
    try:
        wait_until_answering("airflow api-server", server, f"{url}/api/v2/monitor/health", log, 180)
        yield url
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=60)


def _token(url: str, user: str) -> str:
    body = json.dumps({"username": user, "password": UI_USERS[user][1]}).encode()
    request = urllib.request.Request(f"{url}/auth/token", body, {"Content-Type": "application/json"})
    return json.loads(urllib.request.urlopen(request, timeout=60).read())["access_token"]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # a redirect comes back as the response itself


def _get(url: str, headers: dict) -> tuple[int, bytes, str]:
    """(status, body, Location) of a GET, redirects not followed."""
    try:
        with urllib.request.build_opener(_NoRedirect).open(
            urllib.request.Request(url, headers=headers), timeout=120
        ) as r:
            return r.status, r.read(), ""
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers.get("Location", "")


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.reliability
def test_every_reports_route_refuses_anonymous_and_forged_callers(local_services, e2e_run, airflow_ui, reliability):
    import jwt

    # every route the plugin app has, listed in a process of its own: importing the plugin caps MLflow's retries
    # for the process that does (the API server), which later tests here must not inherit
    listed = subprocess.run([sys.executable, "-c", "import json; from plugins.compile_reports import app; "
                             "print(json.dumps([r.path for r in app.routes]))"], env=airflow_env(local_services),
                            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert listed.returncode == 0, listed.stderr[-2000:]
    report = json.loads(Path(e2e_run[0]).read_text())
    run_id = report["mlflow"]["run_id"]
    ((number, _),) = Store(local_services, "mobilenet-e2e").committed().items()  # promoted by the e2e run
    routes = json.loads(listed.stdout.strip().splitlines()[-1])
    assert sorted(routes) == [  # no /docs or /openapi.json beside them
        "/", "/models/{name}", "/models/{name}/serving/{number}", "/runs/{mlflow_run_id}",
        "/runs/{mlflow_run_id}/data-docs/{path:path}", "/static/{name}",
    ]  # fmt: skip
    filled = {"{mlflow_run_id}": run_id, "{path:path}": "index.html", "{number}": str(number)}
    paths = []
    for route in routes:
        name = "reports.css" if route.startswith("/static/") else "mobilenet-e2e"
        for param, value in {**filled, "{name}": name}.items():
            route = route.replace(param, value)
        paths.append(route)
    real = _token(airflow_ui, "admin")
    claims = jwt.decode(real, options={"verify_signature": False})
    forged = {
        "anonymous": {},
        "bearer signed with another key": {"Authorization": "Bearer " + jwt.encode(claims, "not-the-key", "HS512")},
        "cookie signed with another key": {"Cookie": "_token=" + jwt.encode(claims, "not-the-key", "HS512")},
        "unsigned (alg none)": {"Authorization": "Bearer " + jwt.encode(claims, None, "none")},
        "expired": {"Authorization": "Bearer " + jwt.encode({**claims, "exp": 1}, JWT_SECRET, "HS512")},
        "garbage": {"Authorization": "Bearer not.a.token"},
        "basic auth": {"Authorization": "Basic " + base64.b64encode(b"admin:admin-pw").decode()},
    }
    for path in paths:
        for why, headers in forged.items():
            for accept in ("application/json", "text/html"):
                code, body, location = _get(f"{airflow_ui}/compile-reports{path}", {**headers, "Accept": accept})
                # a browser without a session is sent to the login page; nothing of the runs either way
                to_login = accept == "text/html" and code == 303 and "/auth/login?next=" in location
                assert code in (401, 403) or to_login, (why, path, accept, code)
                assert run_id.encode() not in body and b"mobilenet" not in body, (why, path)
                reliability.anonymous_refused += 1
    for user in READERS:  # the admin and a viewer may both read the reports
        code, body, _ = _get(f"{airflow_ui}/compile-reports/", {"Authorization": f"Bearer {_token(airflow_ui, user)}"})
        assert code == 200 and run_id.encode() in body, user
    denied = _token(airflow_ui, "outsider")  # a real login the auth manager denies: 403 from every route
    for path in paths:
        for accept in ("application/json", "text/html"):
            code, body, _ = _get(
                f"{airflow_ui}/compile-reports{path}", {"Authorization": f"Bearer {denied}", "Accept": accept}
            )
            assert code == 403 and run_id.encode() not in body, (path, accept, code)
            reliability.anonymous_refused += 1
    reader = {"Authorization": f"Bearer {real}"}
    for path in paths:  # and every route answers a reader
        code, body, _ = _get(f"{airflow_ui}/compile-reports{path}", reader)
        assert code == 200 and body, path
    code, body, _ = _get(f"{airflow_ui}/compile-reports/runs/{run_id}/data-docs/index.html", reader)
    assert b"<html" in body.lower()  # the gate's GX Data Docs, from the MLflow run
    # and only a pipeline run's: another MLflow run id, a path out of the Data Docs, a version never committed
    for path in (
        f"/runs/{'0' * 32}",
        f"/runs/{run_id}/data-docs/%2e%2e/report.json",
        "/models/mobilenet-e2e/serving/999",
    ):
        code, _, _ = _get(f"{airflow_ui}/compile-reports{path}", reader)
        assert code == 404, path


@pytest.fixture(scope="module")
def gate_failing_run(local_services, e2e_run):
    """A second, smaller run of the e2e model (after it: its version 2) whose int8 config fails one expectation:
    this run asks for a top-5 set agreement of 0.9, which int8 does not keep on the built-in photos (about 0.7: the
    order of classes at 0.2 % probability moves) and fp32 does (1.0), so fp32 is selected and registered. Its
    compiles come from the e2e run's compile cache."""
    conf = {
        "model_name": "mobilenet-e2e",
        "targets": ["onnxruntime"],
        "precisions": ["fp32", "int8"],
        "batch_sizes": [1, 4],
        "max_concurrency": 2,
        "benchmark_window_s": 0.3,
        "calibration_samples": 96,
        "min_top5_agreement": 0.9,
    }
    code, report_path = run_pipeline(local_services, conf)
    assert code == 0 and report_path is not None
    return json.loads(Path(report_path).read_text())


def _all_drawn(browser, theme: str = "") -> bool:
    """Every chart of the page drawn by Vega-Embed (in ``theme``, where given)."""
    from selenium.webdriver.common.by import By

    charts = browser.find_elements(By.CSS_SELECTOR, "[data-chart]")
    return bool(charts) and all(c.get_attribute("data-drawn") == theme or (not theme and c.get_attribute("data-drawn"))
                                for c in charts)  # fmt: skip


def _scrolls_sideways(browser, table: str) -> int:
    """How many pixels the table's frame would have to scroll sideways at this window's width (0: it fits)."""
    return browser.execute_script(
        "const t = document.getElementById(arguments[0]).closest('.table-wrap'); return t.scrollWidth - t.clientWidth",
        table,
    )


def _full_page_screenshot(browser, name: str) -> None:
    # the window's height is the page's plus the browser's own frame around it
    height = browser.execute_script(
        "return document.documentElement.scrollHeight + window.outerHeight - window.innerHeight"
    )
    browser.set_window_size(1400, min(height + 20, 6000))
    browser.save_screenshot(str(ARTIFACTS / name))
    browser.set_window_size(1400, 1000)


@pytest.mark.integration
@pytest.mark.slow
def test_compile_reports_pages_show_runs_a_run_and_a_models_history_in_a_real_browser(
    local_services, e2e_run, gate_failing_run, airflow_ui
):
    """Logged in, a reviewer sees the runs, a run (its selected config, a failed expectation's observed value and
    threshold, charts drawn as SVG marks) and the model's history, in Airflow's colour mode; without a session the
    pages send the browser to the login page. Screenshots in test-artifacts/."""
    from urllib.parse import quote, unquote

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    report, failing = json.loads(Path(e2e_run[0]).read_text()), gate_failing_run
    ((number, _),) = Store(local_services, "mobilenet-e2e").committed().items()  # the e2e run's version, promoted
    int8 = next(c for c in failing["configs"] if c["key"] == "onnxruntime-int8")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(argument)
    ARTIFACTS.mkdir(exist_ok=True)
    browser = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    wait = WebDriverWait(browser, 60)
    css = browser.find_elements
    try:
        browser.get(f"{airflow_ui}/compile-reports/")  # no session: Airflow's login page, then back
        wait.until(lambda b: b.find_elements(By.NAME, "username"))
        assert "/auth/login" in browser.current_url and "mobilenet-e2e" not in browser.page_source
        browser.find_element(By.NAME, "username").send_keys("reviewer")
        browser.find_element(By.NAME, "password").send_keys(UI_USERS["reviewer"][1])
        browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()

        # the runs: both runs of the model, each with its selected config; the e2e run's version serves
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "table#runs tr.run"))
        rows = {r.get_attribute("data-run-id"): r for r in css(By.CSS_SELECTOR, "tr.run")}
        assert {report["run_id"], failing["run_id"]} <= set(rows)
        assert report["selected"] in rows[report["run_id"]].text and f"serving {number}" in rows[report["run_id"]].text
        assert failing["selected"] == "onnxruntime-fp32" and "1 fail" in rows[failing["run_id"]].text
        assert _scrolls_sideways(browser, "runs") == 0  # every column in view at 1400 px, the run ids wrapped
        _full_page_screenshot(browser, "compile_reports_runs.png")
        browser.get(f"{airflow_ui}/compile-reports/?model=mobilenet-e2e&status=failed")  # filtered: neither
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "h1"))
        assert not css(By.CSS_SELECTOR, "tr.run") and "No pipeline runs match these filters" in browser.page_source
        browser.back()

        # one run: the selected config and why, the failed expectation, the charts' marks, the links
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "tr.run"))
        browser.find_element(By.CSS_SELECTOR, f"tr.run[data-run-id='{failing['run_id']}'] a.mono").click()
        wait.until(lambda b: _all_drawn(b))
        selected = browser.find_element(By.ID, "selected")
        assert (
            selected.get_attribute("data-config") == "onnxruntime-fp32" and "onnxruntime-fp32 at batch" in selected.text
        )
        finding = browser.find_element(
            By.CSS_SELECTOR, "tr.finding[data-config='onnxruntime-int8'][data-figure='top5_agreement']"
        )
        observed = primary(int8)["top5_agreement"]
        assert observed < 0.9 and int8["gate"] == "fail"
        assert finding.find_element(By.CSS_SELECTOR, ".observed").text == f"{observed:.3f}"
        assert finding.find_element(By.CSS_SELECTOR, ".threshold").text == ">= 0.900"
        assert finding.find_element(By.CSS_SELECTOR, ".param").text == "min_top5_agreement" and "fail" in finding.text
        points = sum(len(c["benchmark"]) for c in failing["configs"])
        assert len(css(By.CSS_SELECTOR, "#chart-latency g.points_marks path")) == points  # every benchmark point
        assert len(css(By.CSS_SELECTOR, "#chart-latency g.selected_marks path")) == 1
        assert len(css(By.CSS_SELECTOR, "#chart-latency g.pareto_marks path")) == 1
        labels = {t.text for t in css(By.CSS_SELECTOR, "#chart-batch g.role-axis-label text")}
        assert {"1", "4"} <= labels  # the batch sizes swept, on the axis as they are
        assert len(css(By.CSS_SELECTOR, "#chart-accuracy g[class*='threshold_top5_agreement'] line")) == 1
        assert len(css(By.CSS_SELECTOR, "#chart-accuracy g[class*='figures_top5_agreement'] path")) == 2
        links = {a.text: a for a in css(By.CSS_SELECTOR, "#links a")}
        airflow_run = f"/dags/compile_pipeline/runs/{quote(failing['run_id'], safe='')}"
        assert links["Airflow run"].get_attribute("href").endswith(airflow_run)
        assert links["Airflow run"].get_attribute("target") == "_top"  # Airflow's own page, not inside the view
        assert f"/runs/{failing['mlflow']['run_id']}" in links["MLflow run"].get_attribute("href")
        assert links["GX Data Docs"].get_attribute("href").endswith("/data-docs/index.html")
        assert f"Registered version v{failing['mlflow']['version']}" in "\n".join(links)
        task_logs = [a.get_attribute("href") for a in css(By.CSS_SELECTOR, "tr.config a[target=_top]")]
        assert any(h.endswith(f"{airflow_run}/tasks/compile_config_cpu/mapped") for h in task_logs)
        _full_page_screenshot(browser, "compile_reports_run.png")
        browser.execute_script("localStorage.setItem('theme', 'dark')")  # Airflow's colour mode, as its UI keeps it
        browser.refresh()
        wait.until(lambda b: _all_drawn(b, "dark"))
        assert browser.execute_script("return document.documentElement.dataset.theme") == "dark"
        _full_page_screenshot(browser, "compile_reports_run_dark.png")
        browser.execute_script("localStorage.removeItem('theme')")

        # the model's history: both versions, the first approved and serving, the trend drawn
        browser.find_element(By.CSS_SELECTOR, "nav.crumbs a[href$='/models/mobilenet-e2e']").click()
        wait.until(lambda b: _all_drawn(b))
        versions = {r.get_attribute("data-version"): r for r in css(By.CSS_SELECTOR, "tr.version")}
        first, second = versions[report["mlflow"]["version"]], versions[failing["mlflow"]["version"]]
        assert f"serving {number}" in first.find_element(By.CSS_SELECTOR, ".serving").text
        assert "approved" in first.find_element(By.CSS_SELECTOR, ".review").text
        assert "awaiting review" in second.find_element(By.CSS_SELECTOR, ".review").text
        assert f"v{report['mlflow']['version']} serves now" in browser.find_element(By.ID, "model").text
        assert len(css(By.CSS_SELECTOR, "#chart-trend g[class*='trendthroughput'] path")) == 2
        assert _scrolls_sideways(browser, "versions") == 0
        _full_page_screenshot(browser, "compile_reports_history.png")

        # inside Airflow's UI: its navigation entry shows the pages in an iframe, in Airflow's colour mode
        browser.get(f"{airflow_ui}/plugin/compile-reports")
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "iframe"))
        browser.execute_script("localStorage.setItem('theme', 'dark')")
        browser.refresh()
        frame = wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "iframe"))[0]
        browser.switch_to.frame(frame)
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "table#runs tr.run"))
        assert browser.execute_script("return document.documentElement.dataset.theme") == "dark"
        browser.switch_to.default_content()
        assert "Compile reports" in browser.page_source
        browser.save_screenshot(str(ARTIFACTS / "airflow_nav.png"))
        # a link to Airflow's own page leaves the view for that page (the iframe's sandbox has no top navigation)
        browser.switch_to.frame(frame)
        browser.find_element(By.CSS_SELECTOR, f"tr.run[data-run-id='{failing['run_id']}'] a.mono").click()
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#links a"))
        browser.find_element(By.LINK_TEXT, "Airflow run").click()
        browser.switch_to.default_content()
        wait.until(lambda b: f"/dags/compile_pipeline/runs/{failing['run_id']}" in unquote(b.current_url))
    finally:
        browser.quit()
    # and a deep link without a session still goes to the login page, showing nothing of the run
    code, body, location = _get(
        f"{airflow_ui}/compile-reports/runs/{failing['mlflow']['run_id']}", {"Accept": "text/html"}
    )
    assert code == 303 and "/auth/login?next=" in location and b"mobilenet" not in body
