"""``make dag-test DAG=<dag id> CONF='<json>'``: one run of any DAG with ``airflow dags test`` (in-process, no
scheduler), in the environment the demo uses: the local MLflow and S3 services (started, or reused if running),
Airflow's SQLite metadata DB under ``.work/airflow/``, the project's DAGs, plugin and pool. Prints the pipeline's
progress lines; Airflow's full log goes to ``.work/demo/airflow-dags-test.log``."""

from __future__ import annotations

import json
import sys

from devtools import services
from devtools.demo import airflow, ensure_airflow_db
from tasks.core import settings as settings_module


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or len(argv) > 2:
        print("usage: python -m devtools.dag_test <dag id> ['<conf json>']", file=sys.stderr)
        return 2
    dag_id, conf = argv[0], argv[1] if len(argv) > 1 and argv[1].strip() else ""
    if conf:
        try:
            json.loads(conf)
        except ValueError as exc:
            print(f"error: CONF is not JSON: {exc}", file=sys.stderr)
            return 2
    settings = settings_module.load()
    try:
        services.start(settings, log=lambda m: print("  " + m))
    except services.ServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    log_path = settings.home / "demo" / "airflow-dags-test.log"
    ensure_airflow_db(settings, log_path)
    print(f"== airflow dags test {dag_id} (Airflow's log: {log_path})")
    code = airflow(["dags", "test", dag_id, *(["-c", conf] if conf else [])], settings, log_path, echo_progress=True)
    failed = f"failed (exit code {code}): the failing stage and its reason are the FAILED line above; Airflow's log: "
    print(f"== {dag_id}: {'success' if code == 0 else failed + str(log_path)}")
    return code


if __name__ == "__main__":
    sys.exit(main())
