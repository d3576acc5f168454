"""TensorFlow Serving: SavedModels (Neuron inf1 TensorFlow).

Layout: the SavedModel at the version root (``<model>/<N>/saved_model.pb``, ``variables/``), NEFFs alongside;
the pointer is ``<model>/models.config``, built with TF Serving's own schema (``model_server_config.proto`` from
tensorflow-serving-api) with ``model_version_policy { specific }``. TF Serving loads a version as soon as
``saved_model.pb`` appears (tensorflow/serving#1086): it is the graph file, copied last.
"""

from __future__ import annotations

from tasks.serving.runtimes.base import Container, PointerRequest, ServingLayout, ServingRuntime

NAME = "tensorflow-serving"

# numpy dtype -> TensorFlow's DataType (types.proto), what a SavedModel signature can carry
DTYPES = {
    "float32": "DT_FLOAT", "float16": "DT_HALF", "bfloat16": "DT_BFLOAT16", "float64": "DT_DOUBLE",
    "int64": "DT_INT64", "int32": "DT_INT32", "int16": "DT_INT16", "int8": "DT_INT8", "uint8": "DT_UINT8",
    "bool": "DT_BOOL",
}  # fmt: skip


def layout(files: list[str], prefix: str = "saved_model/") -> ServingLayout | None:
    """TF Serving's layout: the SavedModel at the version root (``<N>/saved_model.pb``), pointer ``models.config``."""
    if not any(f.startswith(prefix) for f in files):
        return None
    mapped = {f: f.removeprefix(prefix) for f in files}
    return ServingLayout(NAME, mapped, "saved_model.pb", "models.config", "tensorflow")


def models_config(request: PointerRequest) -> str:
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    RUNTIME.check_dtypes(request)  # the config names no dtypes; the signature does, and must be servable
    server = model_server_config_pb2.ModelServerConfig()
    config = server.model_config_list.config.add(
        name=request.model, base_path=request.base_uri, model_platform="tensorflow"
    )
    config.model_version_policy.specific.versions.append(request.version)
    return text_format.MessageToString(server)


RUNTIME = ServingRuntime(
    name=NAME,
    container=Container(
        image="tensorflow/serving:2.18.0",
        neuron_image="public.ecr.aws/neuron/tensorflow-inference-neuron:latest",
        ports={"grpc": 8500, "http": 8501},
        # the pointer is this model's own config: polling it is how a rollback reaches running pods
        args=lambda pointer, repo, model: [
            "--port=8500",
            "--rest_api_port=8501",
            f"--model_config_file={pointer}",
            "--model_config_file_poll_wait_seconds=60",
        ],
    ),
    dtypes=DTYPES,
    pointer_text=models_config,
)
