"""Where a promoted version's files go for the serving runtime that reads them, what points that runtime
at a version, and the Kubernetes objects that run it.

- TensorFlow Serving for SavedModels (Neuron inf1 TensorFlow): ``<model>/<N>/saved_model.pb``,
  ``variables/``; the pointer is ``<model>/models.config`` (``model_version_policy { specific }``).
- Triton for ONNX, TensorRT plans, TorchScript and ``.pt2``: ``<model>/<N>/model.*``; the pointer is
  ``<model>/config.pbtxt`` with ``version_policy: { specific }``.
- OpenVINO Model Server for IR: ``<model>/<N>/model.xml``, ``model.bin``; the pointer is
  ``<model>/config.json`` with ``model_version_policy.specific``.

Neuron binaries (NEFF) travel alongside in ``<N>/neff/``. Each layout names its graph file, the one a
runtime watches for: it is copied last, so a runtime never sees a version whose weights are missing
(TensorFlow Serving loads a version as soon as ``saved_model.pb`` appears, tensorflow/serving#1086).
A pointer only ever names committed versions, so it is the switch that moves serving.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from tasks.records import TensorSpec

NEURON_TARGETS = ("neuron-inf1", "neuron-inf2")
# numpy dtype -> Triton data type
TRITON_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "int64": "TYPE_INT64", "int32": "TYPE_INT32"}


@dataclass(frozen=True)
class Layout:
    runtime: str  # tensorflow-serving | triton | openvino-model-server
    files: dict[str, str]  # artifact file -> path inside the version directory
    graph_file: str  # path inside the version directory, copied last
    pointer_file: str  # beside the version directories
    platform: str = ""  # Triton platform or backend


def layout_for(target: str, files: list[str]) -> Layout:
    """The serving layout of a compiled artifact, from its target and files."""
    if any(f.startswith("saved_model/") for f in files):
        mapped = {f: f.removeprefix("saved_model/") for f in files}
        return Layout("tensorflow-serving", mapped, "saved_model.pb", "models.config", "tensorflow")
    if "model.xml" in files:
        return Layout("openvino-model-server", {f: f for f in files}, "model.xml", "config.json", "openvino")
    graphs = {  # artifact graph file -> (Triton file name, platform or backend)
        "model.onnx": ("model.onnx", "onnxruntime_onnx"),
        "model.plan": ("model.plan", "tensorrt_plan"),
        "model.pt2": ("model.pt2", "pytorch"),
        "model.neuron.pt": ("model.pt", "pytorch_libtorch"),
        "model.neuronx.pt": ("model.pt", "pytorch_libtorch"),
    }
    for graph, (name, platform) in graphs.items():
        if graph in files:
            mapped = {f: (name if f == graph else f) for f in files}
            return Layout("triton", mapped, name, "config.pbtxt", platform)
    raise ValueError(f"no serving layout for a {target} artifact with files {sorted(files)}")


def upload_order(layout: Layout) -> list[str]:
    """Artifact files in copy order: the graph file last."""
    return sorted(layout.files, key=lambda f: (layout.files[f] == layout.graph_file, f))


def _dims(spec: TensorSpec) -> list[int]:
    return [int(d) if not isinstance(d, str) else -1 for d in spec.shape[1:]]


# OpenVINO's precision is a runtime property, not part of the IR: the server must be told, as compile was.
OPENVINO_PRECISION = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}


def pointer_text(
    layout: Layout,
    model: str,
    base_uri: str,
    version: int,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    max_batch_size: int,
    precision: str = "fp32",
) -> str:
    """The runtime's config pinning ``version`` (a committed one) under ``base_uri`` (the model's S3 prefix)."""
    if layout.runtime == "tensorflow-serving":
        return (
            "model_config_list {\n  config {\n"
            f'    name: "{model}"\n    base_path: "{base_uri}"\n    model_platform: "tensorflow"\n'
            f"    model_version_policy {{ specific {{ versions: {version} }} }}\n"
            "  }\n}\n"
        )
    if layout.runtime == "openvino-model-server":
        config = {
            "name": model,
            "base_path": base_uri,
            "model_version_policy": {"specific": {"versions": [version]}},
            "plugin_config": {"INFERENCE_PRECISION_HINT": OPENVINO_PRECISION.get(precision, "f32")},
        }
        return json.dumps({"model_config_list": [{"config": config}]}, indent=2) + "\n"

    def tensors(kind: str, specs: list[TensorSpec]) -> str:
        rows = [
            f'  {{ name: "{s.name}" data_type: {TRITON_TYPES.get(s.dtype, "TYPE_FP32")} dims: {_dims(s)} }}'
            for s in specs
        ]
        return f"{kind} [\n" + ",\n".join(rows) + "\n]\n"

    key = "backend" if layout.platform == "pytorch" else "platform"
    return (
        f'name: "{model}"\n{key}: "{layout.platform}"\n'
        f'default_model_filename: "{layout.graph_file}"\nmax_batch_size: {max_batch_size}\n'
        + tensors("input", inputs)
        + tensors("output", outputs)
        + f"version_policy: {{ specific: {{ versions: [{version}] }} }}\n"
    )


# Container image, arguments and ports of each runtime; images can be overridden per deployment.
RUNTIMES = {
    "tensorflow-serving": {
        "image": "tensorflow/serving:2.18.0",
        "neuron_image": "public.ecr.aws/neuron/tensorflow-inference-neuron:latest",
        "ports": {"grpc": 8500, "http": 8501},
        "args": lambda pointer, repo: [
            "--port=8500",
            "--rest_api_port=8501",
            f"--model_config_file={pointer}",
            "--model_config_file_poll_wait_seconds=60",
        ],
    },
    "triton": {
        "image": "nvcr.io/nvidia/tritonserver:25.01-py3",
        "neuron_image": "public.ecr.aws/neuron/tritonserver-neuron:latest",
        "ports": {"http": 8000, "grpc": 8001, "metrics": 8002},
        "args": lambda pointer, repo: [
            "tritonserver",
            f"--model-repository={repo}",
            "--model-control-mode=poll",
            "--repository-poll-secs=60",
        ],
    },
    "openvino-model-server": {
        "image": "openvino/model_server:2025.0",
        "neuron_image": "",
        "ports": {"grpc": 9000, "http": 8000},
        "args": lambda pointer, repo: ["--config_path", pointer, "--port", "9000", "--rest_port", "8000"],
    },
}


def k8s_objects(
    layout: Layout,
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
    runtime = RUNTIMES[layout.runtime]
    neuron = target in NEURON_TARGETS
    name = f"{model.replace('_', '-')}-{layout.runtime}"[:63].strip("-")
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "compile-pipeline"}
    env = [{"name": "AWS_REGION", "value": region}]
    if s3_endpoint_url:  # an S3-compatible store: both runtimes' S3 clients read these
        env += [
            {"name": "S3_ENDPOINT", "value": s3_endpoint_url},
            {"name": "AWS_ENDPOINT_URL", "value": s3_endpoint_url},
        ]
    container: dict = {
        "name": layout.runtime,
        "image": runtime["neuron_image"] if neuron and runtime["neuron_image"] else runtime["image"],
        "args": runtime["args"](pointer_uri, repository_uri),
        "ports": [{"name": port, "containerPort": number} for port, number in runtime["ports"].items()],
        "env": env,
        "envFrom": [{"secretRef": {"name": "model-serving-s3", "optional": True}}],  # AWS credentials, if not IRSA
        "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "4Gi"}},
        "readinessProbe": {"tcpSocket": {"port": runtime["ports"]["grpc"]}, "initialDelaySeconds": 10},
    }
    if neuron:
        container["resources"]["limits"]["aws.amazon.com/neuron"] = neuron_devices
        container["securityContext"] = {"capabilities": {"add": ["IPC_LOCK"]}}
    if target == "tensorrt":
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
            "ports": [
                {"name": port, "port": number, "targetPort": number} for port, number in runtime["ports"].items()
            ],
        },
    }
    return [deployment, service]


def validate_k8s(objects: list[dict]) -> None:
    """Check each object against the Kubernetes OpenAPI schema (strict: no unknown fields)."""
    import kubernetes_validate

    for obj in objects:
        try:
            kubernetes_validate.validate(obj, kubernetes_validate.latest_version(), strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise ValueError(f"{obj['kind']} {obj['metadata']['name']} is not valid Kubernetes: {exc.message}") from exc


def k8s_yaml(objects: list[dict]) -> str:
    import yaml

    class PlainDumper(yaml.SafeDumper):
        def ignore_aliases(self, data) -> bool:  # no &id001 anchors: kubectl reads them, people do not
            return True

    return yaml.dump_all(objects, Dumper=PlainDumper, sort_keys=False)
