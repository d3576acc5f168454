"""The Kubernetes objects that run a promoted version with its serving runtime, checked against the schema and
against the naming rules a cluster enforces (which the OpenAPI schema does not)."""

from __future__ import annotations

import hashlib
import re

import kubernetes_validate
import yaml

from tasks import targets
from tasks.serving import runtimes
from tasks.serving.runtimes import ServingLayout

DNS_1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")  # Service names (and what we name Deployments)
MAX_NAME = 63
HASH_CHARS = 6


def object_name(model: str, suffix: str = "") -> str:
    """The Kubernetes name of ``model``'s objects (``suffix``: e.g. the runtime), a DNS-1035 label: lowercase
    letters, digits and '-', starting with a letter, at most 63 characters. Where the model name had to be
    changed to fit (``MobileNet.V2``, ``9lives``, a long name), a short hash of it keeps two models apart."""
    wanted = f"{model}-{suffix}" if suffix else model
    cleaned = re.sub(r"[^a-z0-9]+", "-", wanted.lower()).strip("-")
    if not cleaned[:1].isalpha():
        cleaned = f"m-{cleaned}".rstrip("-")
    if cleaned == wanted and len(cleaned) <= MAX_NAME:
        return cleaned
    tag = hashlib.sha256(model.encode()).hexdigest()[:HASH_CHARS]
    return f"{cleaned[: MAX_NAME - HASH_CHARS - 1].rstrip('-')}-{tag}"


def check_names(objects: list[dict]) -> None:
    """Every name the objects carry against the rule a cluster applies to it (DNS-1035 object names; IANA service
    names, at most 15 characters, for ports; label values)."""
    for obj in objects:
        where = f"{obj['kind']} {obj['metadata']['name']!r}"
        if not DNS_1035_LABEL.match(obj["metadata"]["name"]) or len(obj["metadata"]["name"]) > MAX_NAME:
            raise ValueError(f"{where}: the name is not a DNS-1035 label (lowercase, starts with a letter, <= 63)")
        labels = [obj["metadata"].get("labels", {})]
        spec = obj.get("spec", {})
        if "template" in spec:
            labels.append(spec["template"]["metadata"].get("labels", {}))
            for container in spec["template"]["spec"]["containers"]:
                if not DNS_1035_LABEL.match(container["name"]):
                    raise ValueError(f"{where}: container name {container['name']!r} is not a DNS-1035 label")
                ports = [p["name"] for p in container.get("ports", [])]
                if any(len(p) > 15 or not DNS_1035_LABEL.match(p) for p in ports):
                    raise ValueError(f"{where}: port names {ports} must be IANA service names (<= 15, lowercase)")
        for value in (v for group in labels for v in group.values()):
            if len(value) > MAX_NAME or not re.match(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$", value):
                raise ValueError(f"{where}: label value {value!r} is not a valid Kubernetes label value")


def k8s_objects(
    layout: ServingLayout,
    model: str,
    version: int,
    target: str,
    pointer_uri: str,
    repository_uri: str,
    s3_endpoint_url: str | None,
    region: str,
    neuron_devices: int = 1,
) -> list[dict]:
    """A Deployment and a Service running ``model`` at ``version`` with its runtime (Neuron as in the EKS guide:
    the device plugin's ``aws.amazon.com/neuron`` resource and ``IPC_LOCK``)."""
    runtime = runtimes.get(layout.runtime).container
    device = targets.get(target).serving_device
    neuron = device == "neuron"
    name = object_name(model, layout.runtime)
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "compile-pipeline"}
    env = [{"name": "AWS_REGION", "value": region}]
    if s3_endpoint_url:  # an S3-compatible store: both runtimes' S3 clients read these
        env += [
            {"name": "S3_ENDPOINT", "value": s3_endpoint_url},
            {"name": "AWS_ENDPOINT_URL", "value": s3_endpoint_url},
        ]
    container: dict = {
        "name": layout.runtime,
        "image": runtime.neuron_image if neuron and runtime.neuron_image else runtime.image,
        "args": runtime.args(pointer_uri, repository_uri, model),
        "ports": [{"name": port, "containerPort": number} for port, number in runtime.ports.items()],
        "env": env,
        "envFrom": [{"secretRef": {"name": "model-serving-s3", "optional": True}}],  # AWS credentials, if not IRSA
        "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "4Gi"}},
        "readinessProbe": {"tcpSocket": {"port": runtime.ports["grpc"]}, "initialDelaySeconds": 10},
    }
    if neuron:
        container["resources"]["limits"]["aws.amazon.com/neuron"] = neuron_devices
        container["securityContext"] = {"capabilities": {"add": ["IPC_LOCK"]}}
    if device == "gpu":
        container["resources"]["limits"]["nvidia.com/gpu"] = 1
    annotations = {"compile-pipeline/model": model, "compile-pipeline/version": str(version)}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels, "annotations": annotations},
                "spec": {"containers": [container]},
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "selector": labels,
            "ports": [{"name": port, "port": number, "targetPort": number} for port, number in runtime.ports.items()],
        },
    }
    return [deployment, service]


def validate_k8s(objects: list[dict]) -> None:
    """Check each object against the Kubernetes OpenAPI schema (strict: no unknown fields) and its names against
    the rules a cluster applies."""
    check_names(objects)
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, kubernetes_validate.latest_version(), strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise ValueError(f"{obj['kind']} {obj['metadata']['name']} is not valid Kubernetes: {exc.message}") from exc


def k8s_yaml(objects: list[dict]) -> str:
    class PlainDumper(yaml.SafeDumper):
        def ignore_aliases(self, data) -> bool:  # no &id001 anchors: kubectl reads them, people do not
            return True

    return yaml.dump_all(objects, Dumper=PlainDumper, sort_keys=False)
