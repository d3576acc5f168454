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

# numpy dtype -> Triton's DataType (model_config.proto); anything else is refused, naming the tensor
TRITON_TYPES = {
    "float32": "TYPE_FP32", "float16": "TYPE_FP16", "bfloat16": "TYPE_BF16", "int64": "TYPE_INT64",
    "int32": "TYPE_INT32", "int16": "TYPE_INT16", "int8": "TYPE_INT8", "uint8": "TYPE_UINT8", "bool": "TYPE_BOOL",
}  # fmt: skip


def layout_for(target: str, files: list[str]) -> ServingLayout:
    """The serving layout of a compiled artifact, from its target and files."""
    layout = targets.get(target).serving_layout(files) if target in targets.names() else None
    if layout is None:
        raise ValueError(f"no serving layout for a {target} artifact with files {sorted(files)}")
    return layout


def upload_order(layout: ServingLayout) -> list[str]:
    """Artifact files in copy order: the graph file last."""
    return sorted(layout.files, key=lambda f: (layout.files[f] == layout.graph_file, f))


def _dims(spec: TensorSpec, max_batch_size: int, batch_size: int | None) -> list[int]:
    """Triton's dims: without the batch axis where Triton batches (``max_batch_size`` > 0); the full shape where it
    does not, a fixed-batch artifact's batch axis its batch size (Neuron, TensorRT), a dynamic one -1."""
    shape = spec.shape[1:] if max_batch_size > 0 else [batch_size or spec.shape[0], *spec.shape[1:]]
    return [d if isinstance(d, int) else -1 for d in shape]


def _triton_type(spec: TensorSpec, model_config_pb2) -> int:
    if spec.dtype not in TRITON_TYPES:
        raise ValueError(
            f"tensor {spec.name!r} has dtype {spec.dtype!r}, which Triton's model config has no type for "
            f"(known: {', '.join(TRITON_TYPES)})"
        )
    return model_config_pb2.DataType.Value(TRITON_TYPES[spec.dtype])


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
    batch_size: int | None = None,
) -> str:
    """The runtime's config pinning ``version`` (a committed one) under ``base_uri`` (the model's S3 prefix), built
    with the runtime's own schema where it has one (Triton's ``model_config.proto``, TF Serving's
    ``model_server_config.proto``). ``batch_size``: a fixed-batch artifact's (``max_batch_size`` 0).

    ``runtime_settings`` are those the benchmark's selected point ran with; where the runtime takes them
    (OVMS ``plugin_config``: the performance hint and its number of CPU streams; Triton's instance group and
    intra-op threads) serving runs what was measured.
    """
    if layout.runtime == "tensorflow-serving":
        return _tf_serving_config(model, base_uri, version)
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
    return _triton_config(layout, model, version, inputs, outputs, max_batch_size, batch_size, runtime_settings or {})


def _tf_serving_config(model: str, base_uri: str, version: int) -> str:
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    server = model_server_config_pb2.ModelServerConfig()
    config = server.model_config_list.config.add(name=model, base_path=base_uri, model_platform="tensorflow")
    config.model_version_policy.specific.versions.append(version)
    return text_format.MessageToString(server)


# Triton's backend parameter for intra-op threads, and the setting that counts the instances, per platform.
TRITON_THREAD_PARAMETER = {"onnxruntime_onnx": ("intra_op_thread_count", "sessions"),
                           "pytorch": ("INTRA_OP_THREAD_COUNT", "runners")}  # fmt: skip


def _triton_config(
    layout: ServingLayout,
    model: str,
    version: int,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    max_batch_size: int,
    batch_size: int | None,
    runtime_settings: dict[str, str],
) -> str:
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    config = model_config_pb2.ModelConfig(
        name=model, default_model_filename=layout.graph_file, max_batch_size=max_batch_size
    )
    if layout.platform == "pytorch":
        config.backend = layout.platform
    else:
        config.platform = layout.platform
    for specs, field in ((inputs, config.input), (outputs, config.output)):
        for spec in specs:
            field.add(
                name=spec.name,
                data_type=_triton_type(spec, model_config_pb2),
                dims=_dims(spec, max_batch_size, batch_size),
            )
    config.version_policy.specific.versions.append(version)
    # the measured instances x intra-op threads (ONNX Runtime sessions, Inductor runners)
    parameter, instances = TRITON_THREAD_PARAMETER.get(layout.platform, ("", ""))
    if parameter and instances in runtime_settings:
        config.instance_group.add(
            count=int(runtime_settings[instances]), kind=model_config_pb2.ModelInstanceGroup.KIND_CPU
        )
        config.parameters[parameter].string_value = str(int(runtime_settings["intra_op_num_threads"]))
    return text_format.MessageToString(config)
