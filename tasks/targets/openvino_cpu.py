"""OpenVINO on CPU: the model converted to IR; precision chosen with the CPU plugin's inference hint."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from tasks.files import local_path
from tasks.records import CompileConfig, CompiledArtifact, ExportedModel
from tasks.targets import CompileError, Predict

MODEL_FILE = "model.xml"  # with model.bin beside it
# The CPU plugin silently runs bf16 on CPUs with AVX512_BF16 unless told otherwise,
# so every config states its precision explicitly.
PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16"}


class OpenVINOCPU:
    name = "openvino"
    precisions = tuple(PRECISION_HINTS)
    fixed_batch = False

    def available(self) -> tuple[bool, str]:
        if importlib.util.find_spec("openvino") is None:
            return False, "openvino is not installed"
        import openvino as ov

        if "CPU" not in ov.Core().available_devices:
            return False, "OpenVINO finds no CPU device"
        return True, f"openvino {ov.__version__}"

    def _device_config(self, precision: str) -> dict[str, str]:
        import openvino as ov

        if precision == "bf16" and "BF16" not in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            raise CompileError("this CPU has no bf16 support (OpenVINO lists no BF16 capability)")
        return {"INFERENCE_PRECISION_HINT": PRECISION_HINTS[precision], "PERFORMANCE_HINT": "LATENCY"}

    def compile(
        self, exported: ExportedModel, config: CompileConfig, out_dir: Path, calibration: np.ndarray
    ) -> tuple[str, str]:
        import openvino as ov

        if config.precision not in PRECISION_HINTS:
            raise CompileError(f"openvino cannot compile precision {config.precision!r}")
        model = ov.convert_model(str(local_path(exported.formats["onnx"].uri)))
        if config.batch_size:
            model.reshape({model.inputs[0]: [config.batch_size, *model.inputs[0].get_partial_shape()[1:]]})
        # Weights stay fp32 in the IR; the precision is applied by the plugin when it compiles.
        ov.save_model(model, str(out_dir / MODEL_FILE), compress_to_fp16=False)
        # Compile once for the device so a config the plugin cannot run fails here, not in validation.
        ov.Core().compile_model(model, "CPU", self._device_config(config.precision))
        return "openvino", ov.__version__

    def load(self, artifact: CompiledArtifact, batch_size: int) -> Predict:
        import openvino as ov

        core = ov.Core()
        model = core.read_model(str(local_path(artifact.uri) / MODEL_FILE))
        shape = model.inputs[0].get_partial_shape()
        if shape[0].is_dynamic:
            # A static batch lets the CPU plugin pick its best kernels for this size.
            model.reshape({model.inputs[0]: [batch_size, *shape[1:]]})
        compiled = core.compile_model(model, "CPU", self._device_config(artifact.config.precision))
        request = compiled.create_infer_request()

        def predict(batch: np.ndarray) -> np.ndarray:
            return request.infer({0: batch})[0].copy()

        return predict


TARGET = OpenVINOCPU()
