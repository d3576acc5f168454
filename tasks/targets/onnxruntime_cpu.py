"""ONNX Runtime on CPU: fp32 with offline graph optimisation, int8 by static QDQ quantisation."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np

from tasks.files import local_path
from tasks.records import CompileConfig, CompiledArtifact, ExportedModel
from tasks.targets import CompileError, Predict

MODEL_FILE = "model.onnx"


class _Calibration:
    """Feeds calibration batches to ONNX Runtime's quantiser (its CalibrationDataReader protocol)."""

    def __init__(self, input_name: str, samples: np.ndarray, batch_size: int = 8):
        self._batches = iter([{input_name: samples[i : i + batch_size]} for i in range(0, len(samples), batch_size)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)

    def rewind(self) -> None:  # not needed by MinMax calibration
        pass


class OnnxRuntimeCPU:
    name = "onnxruntime"
    precisions = ("fp32", "int8")
    fixed_batch = False

    def available(self) -> tuple[bool, str]:
        if importlib.util.find_spec("onnxruntime") is None:
            return False, "onnxruntime is not installed"
        import onnxruntime

        if "CPUExecutionProvider" not in onnxruntime.get_available_providers():
            return False, "onnxruntime has no CPUExecutionProvider"
        return True, f"onnxruntime {onnxruntime.__version__}"

    def compile(
        self, exported: ExportedModel, config: CompileConfig, out_dir: Path, calibration: np.ndarray
    ) -> tuple[str, str]:
        import onnxruntime as ort

        source = local_path(exported.formats["onnx"].uri)
        target = out_dir / MODEL_FILE
        if config.precision == "fp32":
            options = ort.SessionOptions()
            # EXTENDED, not ALL: fusions saved at ALL are specific to the compiling machine's CPU.
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
            options.optimized_model_filepath = str(target)
            ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
        elif config.precision == "int8":
            from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
            from onnxruntime.quantization.shape_inference import quant_pre_process

            prepared = out_dir / "prepared.onnx"
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
            quantize_static(
                str(prepared),
                str(target),
                _Calibration(exported.inputs[0].name, calibration),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
            )
            prepared.unlink()
        else:
            raise CompileError(f"onnxruntime cannot compile precision {config.precision!r}")
        return "onnxruntime", ort.__version__

    def load(self, artifact: CompiledArtifact, batch_size: int) -> Predict:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = os.cpu_count() or 1
        session = ort.InferenceSession(
            str(local_path(artifact.uri) / MODEL_FILE), options, providers=["CPUExecutionProvider"]
        )
        input_name = session.get_inputs()[0].name

        def predict(batch: np.ndarray) -> np.ndarray:
            return session.run(None, {input_name: batch})[0]

        return predict


TARGET = OnnxRuntimeCPU()
