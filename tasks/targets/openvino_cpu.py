"""OpenVINO on CPU: the model converted to IR; precision chosen with the CPU plugin's inference hint."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np

from tasks.core.batching import Predict
from tasks.core.files import local_path
from tasks.core.records import CompileConfig, CompiledArtifact, CompileReport, ExportedModel, TensorSpec
from tasks.targets.base import CompileError, ServingLayout, SingleFormatTarget, openvino_server_layout

# Imported inside the methods that need them, so that only a worker that compiles or runs this target
# loads them: openvino.

MODEL_FILE = "model.xml"  # with model.bin beside it
# The CPU plugin silently runs bf16 on CPUs with AVX512_BF16 unless told otherwise,
# so every config states its precision explicitly.
PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16"}


class OpenVINOCPU(SingleFormatTarget):
    name = compiler = compiler_package = "openvino"
    source_format = "onnx"
    device = "CPU"
    flags_by_precision = {
        precision: [f"INFERENCE_PRECISION_HINT={hint}", "compress_to_fp16=False"]
        for precision, hint in PRECISION_HINTS.items()
    }
    runtime_requirements = ("openvino",)

    def serving_layout(self, files: list[str]) -> ServingLayout | None:
        return openvino_server_layout(files)

    def available(self) -> tuple[bool, str]:
        if importlib.util.find_spec("openvino") is None:
            return False, "openvino is not installed"
        import openvino as ov

        if "CPU" not in ov.Core().available_devices:
            return False, "OpenVINO finds no CPU device"
        return True, f"openvino {ov.__version__}"

    def _device_config(self, precision: str, hint: str = "LATENCY") -> dict[str, str]:
        import openvino as ov

        if precision == "bf16" and "BF16" not in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            raise CompileError("this CPU has no bf16 support (OpenVINO lists no BF16 capability)")
        return {"INFERENCE_PRECISION_HINT": PRECISION_HINTS[precision], "PERFORMANCE_HINT": hint}

    def _reshape(self, model, specs: list[TensorSpec], batch_size: int) -> None:
        """Fix the batch dimension: a static shape lets the CPU plugin pick its best kernels for that size."""
        shapes = {}
        for port, spec in zip(model.inputs, specs, strict=True):
            shape = port.get_partial_shape()
            axis = spec.batch_axis
            if axis is not None and shape[axis].is_dynamic:
                shape[axis] = batch_size
                shapes[port] = shape
        if shapes:
            model.reshape(shapes)

    def compile(
        self,
        exported: ExportedModel,
        config: CompileConfig,
        out_dir: Path,
        calibration: dict[str, np.ndarray] | None,
    ) -> CompileReport:
        import openvino as ov

        try:
            model = ov.convert_model(str(self.source(exported, config)))
        except Exception as exc:  # OpConversionFailure: its first line is a source location, the ops come later
            unsupported = re.search(r"No conversion rule found for operations: (.+)", str(exc))
            if unsupported:
                raise CompileError(f"OpenVINO cannot convert operator(s) {unsupported.group(1).strip()}") from exc
            raise
        if config.batch_size:
            self._reshape(model, exported.inputs, config.batch_size)
        # Weights stay fp32 in the IR; the precision is applied by the plugin when it compiles.
        ov.save_model(model, str(out_dir / MODEL_FILE), compress_to_fp16=False)
        # Compile once for the device so a config the plugin cannot run fails here, not in validation.
        ov.Core().compile_model(model, "CPU", self._device_config(config.precision))
        operators = sum(1 for op in model.get_ordered_ops() if op.get_type_name() not in ("Parameter", "Result"))
        return self.report(config, ov.__version__, operators)

    def _compiled_model(self, artifact: CompiledArtifact, batch_size: int, hint: str):
        import openvino as ov

        core = ov.Core()
        model = core.read_model(str(local_path(artifact.uri) / MODEL_FILE))
        shapes = {}
        for port in model.inputs:
            shape = port.get_partial_shape()
            if shape.rank.is_static and len(shape) and shape[0].is_dynamic:  # exports put the batch axis first
                shape[0] = batch_size
                shapes[port] = shape
        if shapes:
            model.reshape(shapes)
        return core.compile_model(model, "CPU", self._device_config(artifact.config.precision, hint))

    @staticmethod
    def _predictor(compiled) -> Predict:
        request = compiled.create_infer_request()
        names = [port.get_any_name() for port in compiled.outputs]

        def predict(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            results = request.infer(inputs)
            return {name: results[i].copy() for i, name in enumerate(names)}

        return predict

    def load(self, artifact: CompiledArtifact, batch_size: int) -> Predict:
        """One request at a time (validation, the smoke test, serving's pyfunc): the LATENCY hint."""
        return self._predictor(self._compiled_model(artifact, batch_size, "LATENCY"))

    def load_streams(
        self, artifact: CompiledArtifact, batch_size: int, in_flight: int
    ) -> tuple[list[Predict], dict[str, str]]:
        """``in_flight`` requests at once, in the mode OpenVINO's authors recommend for it, and the settings used.

        One request: the LATENCY hint (one CPU stream with every core). More: one model compiled with the
        THROUGHPUT hint (the plugin splits the cores into its own number of CPU streams) and one infer request
        per request in flight, as an ``AsyncInferQueue`` of that many jobs would hold; the harness's threads
        release the GIL inside ``infer``. Not one compiled model per request: each would take every core.
        """
        hint = "LATENCY" if in_flight == 1 else "THROUGHPUT"
        compiled = self._compiled_model(artifact, batch_size, hint)
        settings = {
            "PERFORMANCE_HINT": hint,
            "NUM_STREAMS": str(compiled.get_property("NUM_STREAMS")),
            "OPTIMAL_NUMBER_OF_INFER_REQUESTS": str(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")),
        }
        return [self._predictor(compiled) for _ in range(in_flight)], settings


TARGET = OpenVINOCPU()
