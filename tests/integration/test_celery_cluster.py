"""Airflow on the CeleryExecutor with a real Redis broker (`make cluster`): queues map to workers, and a
compile worker lost in the middle of a compile is survived; eight runs at once hold the compiler slot cap."""

import json
import time
import urllib.error
import urllib.request
from datetime import datetime

import psutil
import pytest
from conftest import free_port, wait_until

from devtools.airflow_local import ADMIN
from devtools.cluster import WORKERS, LocalCluster
from tasks.compile.cache import ENTRY, LocalCache
from tasks.core.settings import PROJECT_ROOT
from tasks.serving import review as registry

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.scenario]

COMPILE, ACCELERATOR = WORKERS
ARTIFACTS = PROJECT_ROOT / "test-artifacts"  # the load test's figures, for the README
COMPILE_TASKS = {"plan", "compile_config"}  # plan judges target availability where compiles run


class Api:
    """Airflow's REST API as a client uses it: a JWT from /auth/token, then /api/v2."""

    def __init__(self, url: str):
        self.url = url
        self.token = self.call("POST", "/auth/token", {"username": ADMIN, "password": ADMIN})["access_token"]

    def call(self, method: str, path: str, body: dict | None = None, attempts: int = 3):
        """One request; a 5xx is retried (on SQLite a write can meet "database is locked" while the scheduler
        writes), so callers send only requests that are safe to repeat (a new run carries its own run id)."""
        request = urllib.request.Request(
            self.url + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json"}
            | ({"Authorization": f"Bearer {self.token}"} if getattr(self, "token", None) else {}),
        )
        for attempt in range(attempts):
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    return json.loads(response.read() or b"null")
            except urllib.error.HTTPError as error:
                if error.code < 500 or attempt == attempts - 1:
                    raise
                time.sleep(2)

    def trigger(self, dag_id: str, run_id: str, conf: dict) -> str:
        body = {"dag_run_id": run_id, "logical_date": None, "conf": conf}
        try:
            return self.call("POST", f"/api/v2/dags/{dag_id}/dagRuns", body)["dag_run_id"]
        except urllib.error.HTTPError as error:
            if error.code != 409:  # 409: an earlier attempt did create it
                raise
            return run_id

    def answers(self, method: str, path: str) -> bool:
        try:
            self.call(method, path)
            return True
        except OSError:  # urllib's HTTPError (404 until the DAG is parsed) and connection errors
            return False


def _wait(what: str, check, timeout_s: float, cluster: LocalCluster, poll_s: float = 2.0):
    def logs() -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-1500:]}" for p in cluster.log_dir.glob("*.log")
        )

    return wait_until(what, check, timeout_s, logs, poll_s)


def _compiler_under(pid: int) -> psutil.Process | None:
    """The compiler child process (tasks.compile.worker) of a task running under the worker ``pid``."""
    try:
        for process in psutil.Process(pid).children(recursive=True):
            if "tasks.compile.worker" in " ".join(process.cmdline()):
                return process
    except psutil.Error:
        pass
    return None


@pytest.mark.reliability
def test_tasks_run_on_their_queues_workers_and_a_compile_worker_lost_mid_compile_is_survived(
    local_services, tmp_path, reliability
):
    cache_dir = tmp_path / "compile-cache"  # empty: the compiles are real, not cache hits
    cluster = LocalCluster(
        local_services, port=free_port(), redis_port=free_port(), heartbeat_timeout_s=20,
        extra_env={"COMPILE_CACHE_URI": str(cache_dir)},
    )  # fmt: skip
    try:
        cluster.start(log=lambda m: None)
        api = Api(cluster.url)
        _wait("compile_pipeline parsed", lambda: api.answers("GET", "/api/v2/dags/compile_pipeline"), 300, cluster)
        api.call("PATCH", "/api/v2/dags/compile_pipeline", {"is_paused": False})
        conf = {"model_name": "cluster-mobilenet", "targets": ["onnxruntime", "openvino"], "precisions": ["fp32"],
                "batch_sizes": [1, 4], "max_concurrency": 2, "benchmark_window_s": 0.3}  # fmt: skip
        run_id = api.trigger("compile_pipeline", "cluster-worker-lost", conf)

        # The compile worker's machine goes away while its compiler runs.
        worker = cluster.processes[COMPILE.hostname]
        compiler = _wait("a compile on the compile worker", lambda: _compiler_under(worker.pid), 600, cluster, 0.2)
        lost = cluster.lose_worker(COMPILE)
        assert compiler.pid in lost
        reliability.faults += 2  # the worker and its compiler, SIGKILLed
        _wait("every process of the lost worker gone",
              lambda: not [pid for pid in lost if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"],
              30, cluster, 0.5)  # fmt: skip
        cluster.start_worker(COMPILE)

        run_path = f"/api/v2/dags/compile_pipeline/dagRuns/{run_id}"
        state = _wait("the run finishing",
                      lambda: api.call("GET", run_path)["state"] in ("success", "failed") and api.call("GET", run_path)["state"],
                      1200, cluster, 5)  # fmt: skip
        instances = api.call("GET", f"{run_path}/taskInstances?limit=100")["task_instances"]
        summary = [(ti["task_id"], ti["rendered_map_index"], ti["state"], ti["hostname"], ti["try_number"])
                   for ti in instances]  # fmt: skip
        assert state == "success", summary

        # Every compile (and the plan) ran on the compile worker, everything else (validation, benchmarks) on the other.
        for ti in instances:
            expected = COMPILE if ti["task_id"] in COMPILE_TASKS else ACCELERATOR
            assert ti["state"] == "success" and ti["hostname"] == expected.hostname, summary
            assert ti["queue"] in expected.queues, summary
        assert {ti["task_id"] for ti in instances} >= {"compile_config", "validate", "benchmark", "register"}
        compiles = [ti for ti in instances if ti["task_id"] == "compile_config"]
        assert len(compiles) == 2 and any(ti["try_number"] >= 2 for ti in compiles), summary  # retried after the loss

        candidate = registry.client(local_services).get_model_version_by_alias("cluster-mobilenet", "candidate")
        assert candidate.tags["target"] in ("onnxruntime", "openvino") and candidate.tags["validation"] == "pass"

        # The cache holds only whole entries: one per config, each with its entry.json and every file it lists.
        entries = [path for path in cache_dir.iterdir() if not path.name.startswith(".")]
        assert len(entries) == 2
        cache = LocalCache(cache_dir)
        for entry in entries:
            assert (entry / ENTRY).is_file()
            assert cache.fetch(entry.name, tmp_path / "fetched" / entry.name) is not None  # every file and its sha256
    finally:
        cluster.stop()


def _most_at_once(intervals: list[tuple[str, str]]) -> int:
    """The most intervals (ISO start, end) open at one instant."""
    instant = datetime.fromisoformat
    events = sorted([(instant(start), 1) for start, _ in intervals] + [(instant(end), -1) for _, end in intervals])
    most = running = 0
    for _, step in events:  # an end sorts before a start at the same instant
        running += step
        most = max(most, running)
    return most


LOAD_RUNS = 8


@pytest.mark.reliability
def test_a_monday_of_retrains_at_once_all_register_within_the_compiler_slot_cap(
    local_services, tmp_path, monkeypatch, reliability
):
    """Eight compile_pipeline runs triggered together through the REST API, pool compiler_slots at 1 while the
    compile worker could take 2: every run succeeds and registers one version, compiles never overlap, the
    cache holds only whole entries, and the API (and the scheduler behind it) keeps answering."""
    monkeypatch.setenv("COMPILER_SLOTS", "1")  # the pool the cluster creates
    cache_dir = tmp_path / "compile-cache"
    cluster = LocalCluster(
        local_services, port=free_port(), redis_port=free_port(), extra_env={"COMPILE_CACHE_URI": str(cache_dir)}
    )
    try:
        cluster.start(log=lambda m: None)
        api = Api(cluster.url)
        _wait("compile_pipeline parsed", lambda: api.answers("GET", "/api/v2/dags/compile_pipeline"), 300, cluster)
        api.call("PATCH", "/api/v2/dags/compile_pipeline", {"is_paused": False})
        assert api.call("GET", "/api/v2/pools/compiler_slots")["slots"] == 1
        started = time.monotonic()
        runs = {}
        for i in range(LOAD_RUNS):
            conf = {"model_name": f"monday-{i}", "model_uri": "builtin:text_encoder", "dataset": "builtin:text",
                    "targets": ["onnxruntime"], "precisions": ["fp32"], "batch_sizes": [1], "max_concurrency": 1,
                    "benchmark_window_s": 0.2}  # fmt: skip
            runs[conf["model_name"]] = api.trigger("compile_pipeline", f"monday-{i}", conf)
        slowest_answer = 0.0

        def states() -> dict[str, str] | None:
            nonlocal slowest_answer
            asked = time.monotonic()
            health = api.call("GET", "/api/v2/monitor/health")
            found = {m: api.call("GET", f"/api/v2/dags/compile_pipeline/dagRuns/{r}")["state"] for m, r in runs.items()}
            slowest_answer = max(slowest_answer, time.monotonic() - asked)
            assert health["scheduler"]["status"] == "healthy", health
            return found if all(s in ("success", "failed") for s in found.values()) else None

        final = _wait(f"{LOAD_RUNS} runs finishing", states, 1500, cluster, 5)
        wall_s = time.monotonic() - started
        instances = {
            m: api.call("GET", f"/api/v2/dags/compile_pipeline/dagRuns/{r}/taskInstances?limit=100")["task_instances"]
            for m, r in runs.items()
        }
        failed = {m: [(t["task_id"], t["state"]) for t in instances[m] if t["state"] != "success"] for m in runs}
        assert set(final.values()) == {"success"}, failed

        registry_client = registry.client(local_services)
        for model, run_id in runs.items():
            versions = registry_client.search_model_versions(f"name = '{model}'")
            assert len(versions) == 1, (model, [v.version for v in versions])  # exactly one, never a duplicate
            assert versions[0].tags["pipeline_run_id"] == run_id
        compiles = [t for ts in instances.values() for t in ts if t["task_id"] == "compile_config"]
        assert len(compiles) == LOAD_RUNS and {t["pool"] for t in compiles} == {"compiler_slots"}
        most = _most_at_once([(t["start_date"], t["end_date"]) for t in compiles])
        assert most == 1, most  # the pool's cap, although the compile worker takes two tasks at once

        entries = [path for path in cache_dir.iterdir() if not path.name.startswith(".")]
        cache = LocalCache(cache_dir)
        for entry in entries:
            assert (entry / ENTRY).is_file()
            assert cache.fetch(entry.name, tmp_path / "fetched" / entry.name) is not None
        reliability.load_runs_held += LOAD_RUNS
        reliability.races += 1
        summary = {"runs": LOAD_RUNS, "wall_s": round(wall_s), "compiles_at_once": most, "slots": 1,
                   "slowest_api_answer_s": round(slowest_answer, 2), "cache_entries": len(entries)}  # fmt: skip
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "load.json").write_text(json.dumps(summary, indent=2))
        print(f"load: {summary}")
    finally:
        cluster.stop()
