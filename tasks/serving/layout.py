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
A pointer only ever names committed versions, so it is the switch that moves serving. Which runtime reads
a target's files is the target's own fact (``Target.serving_layout``).
"""

from __future__ import annotations

import json

from tasks import targets
from tasks.core.records import TensorSpec
from tasks.targets.base import ServingLayout

# numpy dtype -> Triton data type
TRITON_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "int64": "TYPE_INT64", "int32": "TYPE_INT32"}


def layout_for(target: str, files: list[str]) -> ServingLayout:
    """The serving layout of a compiled artifact, from its target and files."""
    layout = targets.get(target).serving_layout(files) if target in targets.names() else None
    if layout is None:
        raise ValueError(f"no serving layout for a {target} artifact with files {sorted(files)}")
    return layout


def upload_order(layout: ServingLayout) -> list[str]:
    """Artifact files in copy order: the graph file last."""
    return sorted(layout.files, key=lambda f: (layout.files[f] == layout.graph_file, f))


def _dims(spec: TensorSpec) -> list[int]:
    return [int(d) if not isinstance(d, str) else -1 for d in spec.shape[1:]]


# OpenVINO's precision is a runtime property, not part of the IR: the server must be told, as compile was.
OPENVINO_PRECISION = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}


# What OVMS takes from a measured point; OPTIMAL_NUMBER_OF_INFER_REQUESTS is read-only, for the report.
OPENVINO_SERVING_SETTINGS = ("PERFORMANCE_HINT", "NUM_STREAMS")


def pointer_text(
    layout: ServingLayout,
    model: str,
    base_uri: str,
    version: int,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    max_batch_size: int,
    precision: str = "fp32",
    runtime_settings: dict[str, str] | None = None,
) -> str:
    """The runtime's config pinning ``version`` (a committed one) under ``base_uri`` (the model's S3 prefix).

    ``runtime_settings`` are those the benchmark's selected point ran with; where the runtime takes them
    (OVMS ``plugin_config``: the performance hint and its number of CPU streams) serving runs what was measured.
    """
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
            "plugin_config": {
                "INFERENCE_PRECISION_HINT": OPENVINO_PRECISION.get(precision, "f32"),
                **{k: v for k, v in (runtime_settings or {}).items() if k in OPENVINO_SERVING_SETTINGS},
            },
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
        + _triton_instances(layout, runtime_settings or {})
    )


# Triton's backend parameter for intra-op threads, and the setting that counts the instances, per platform.
TRITON_THREAD_PARAMETER = {"onnxruntime_onnx": ("intra_op_thread_count", "sessions"),
                           "pytorch": ("INTRA_OP_THREAD_COUNT", "runners")}  # fmt: skip


def _triton_instances(layout: ServingLayout, runtime_settings: dict[str, str]) -> str:
    """The measured instances x intra-op threads (ONNX Runtime sessions, Inductor runners) as Triton's instance
    group and backend parameter."""
    parameter, instances = TRITON_THREAD_PARAMETER.get(layout.platform, ("", ""))
    if not parameter or instances not in runtime_settings:
        return ""
    return (
        f"instance_group [ {{ count: {int(runtime_settings[instances])} kind: KIND_CPU }} ]\n"
        f'parameters {{ key: "{parameter}" value: {{ string_value: '
        f'"{int(runtime_settings["intra_op_num_threads"])}" }} }}\n'
    )
