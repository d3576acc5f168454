"""OpenVINO Model Server: OpenVINO IR.

Layout ``<model>/<N>/model.xml`` and ``model.bin``; the pointer is ``<model>/config.json`` with
``model_version_policy.specific`` and the ``plugin_config`` the benchmark's selected point ran with.
"""

from __future__ import annotations

import json

from tasks.serving.runtimes.base import Container, PointerRequest, ServingLayout, ServingRuntime

NAME = "openvino-model-server"

# numpy dtype -> OpenVINO's element type
DTYPES = {
    "float32": "f32", "float16": "f16", "bfloat16": "bf16", "float64": "f64", "int64": "i64", "int32": "i32",
    "int16": "i16", "int8": "i8", "uint8": "u8", "bool": "boolean",
}  # fmt: skip

# OpenVINO's precision is a runtime property, not part of the IR: the server must be told, as compile was.
PRECISION = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}

# What OVMS takes from a measured point; OPTIMAL_NUMBER_OF_INFER_REQUESTS is read-only, for the report.
SERVING_SETTINGS = ("PERFORMANCE_HINT", "NUM_STREAMS")


def layout(files: list[str]) -> ServingLayout | None:
    """OpenVINO Model Server's layout (``<N>/model.xml`` and ``model.bin``, pointer ``config.json``)."""
    if "model.xml" not in files:
        return None
    return ServingLayout(NAME, {f: f for f in files}, "model.xml", "config.json")


def config_json(request: PointerRequest) -> str:
    RUNTIME.check_dtypes(request)
    config = {
        "name": request.model,
        "base_path": request.base_uri,
        "model_version_policy": {"specific": {"versions": [request.version]}},
        "plugin_config": {
            "INFERENCE_PRECISION_HINT": PRECISION.get(request.precision, "f32"),
            **{k: v for k, v in request.runtime_settings.items() if k in SERVING_SETTINGS},
        },
    }
    return json.dumps({"model_config_list": [{"config": config}]}, indent=2) + "\n"


RUNTIME = ServingRuntime(
    name=NAME,
    container=Container(
        image="openvino/model_server:2025.0",
        neuron_image="",
        ports={"grpc": 9000, "http": 8000},
        args=lambda pointer, repo, model: ["--config_path", pointer, "--port", "9000", "--rest_port", "8000"],
    ),
    dtypes=DTYPES,
    pointer_text=config_json,
)
