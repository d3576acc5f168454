"""Triton Inference Server: ONNX, TensorRT plans, TorchScript (Neuron inf2) and ``.pt2``.

Layout ``<model>/<N>/model.*``; the pointer is ``<model>/config.pbtxt``, built with Triton's own schema
(``model_config.proto`` from tritonclient) with ``version_policy: { specific }``. The repository is the
serving prefix every model shares, so a Deployment loads its own model alone (explicit model control).
"""

from __future__ import annotations

from tasks.core.schema import TensorSpec
from tasks.serving.runtimes.base import Container, PointerRequest, ServingLayout, ServingRuntime

NAME = "triton"

# numpy dtype -> Triton's DataType (model_config.proto)
DTYPES = {
    "float32": "TYPE_FP32", "float16": "TYPE_FP16", "bfloat16": "TYPE_BF16", "float64": "TYPE_FP64",
    "int64": "TYPE_INT64", "int32": "TYPE_INT32", "int16": "TYPE_INT16", "int8": "TYPE_INT8", "uint8": "TYPE_UINT8",
    "bool": "TYPE_BOOL",
}  # fmt: skip

# Triton's backend parameter for intra-op threads, and the setting that counts the instances, per platform.
THREAD_PARAMETER = {"onnxruntime_onnx": ("intra_op_thread_count", "sessions"),
                    "pytorch": ("INTRA_OP_THREAD_COUNT", "runners")}  # fmt: skip


def layout(files: list[str], graph: str, platform: str, served_as: str = "") -> ServingLayout | None:
    """Triton's layout (``<N>/model.*``, pointer ``config.pbtxt``) where ``graph`` is among ``files``."""
    if graph not in files:
        return None
    name = served_as or graph
    return ServingLayout(NAME, {f: (name if f == graph else f) for f in files}, name, "config.pbtxt", platform)


def _dims(spec: TensorSpec, max_batch_size: int, batch_size: int | None) -> list[int]:
    """Triton's dims: without the batch axis where Triton batches (``max_batch_size`` > 0); the full shape where it
    does not, a fixed-batch artifact's batch axis its batch size (Neuron, TensorRT), a dynamic one -1."""
    shape = spec.shape[1:] if max_batch_size > 0 else [batch_size or spec.shape[0], *spec.shape[1:]]
    return [d if isinstance(d, int) else -1 for d in shape]


def config_pbtxt(request: PointerRequest) -> str:
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    layout, settings = request.layout, request.runtime_settings
    config = model_config_pb2.ModelConfig(
        name=request.model, default_model_filename=layout.graph_file, max_batch_size=request.max_batch_size
    )
    if layout.platform == "pytorch":
        config.backend = layout.platform
    else:
        config.platform = layout.platform
    for specs, field in ((request.inputs, config.input), (request.outputs, config.output)):
        for spec in specs:
            field.add(
                name=spec.name,
                data_type=model_config_pb2.DataType.Value(RUNTIME.type_of(spec)),
                dims=_dims(spec, request.max_batch_size, request.batch_size),
            )
    config.version_policy.specific.versions.append(request.version)
    # the measured instances x intra-op threads (ONNX Runtime sessions, Inductor runners)
    parameter, instances = THREAD_PARAMETER.get(layout.platform, ("", ""))
    if parameter and instances in settings:
        config.instance_group.add(count=int(settings[instances]), kind=model_config_pb2.ModelInstanceGroup.KIND_CPU)
        config.parameters[parameter].string_value = str(int(settings["intra_op_num_threads"]))
    return text_format.MessageToString(config)


RUNTIME = ServingRuntime(
    name=NAME,
    container=Container(
        image="nvcr.io/nvidia/tritonserver:25.01-py3",
        neuron_image="public.ecr.aws/neuron/tritonserver-neuron:latest",
        ports={"http": 8000, "grpc": 8001, "metrics": 8002},
        # a new version is a new pod (the template's annotation), so no polling
        args=lambda pointer, repo, model: [
            "tritonserver",
            f"--model-repository={repo}",
            "--model-control-mode=explicit",
            f"--load-model={model}",
        ],
    ),
    dtypes=DTYPES,
    pointer_text=config_pbtxt,
)
