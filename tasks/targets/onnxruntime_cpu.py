"""ONNX Runtime on CPU: fp32 with offline graph optimisation, int8 by static QDQ quantisation.

int8 follows ONNX Runtime's quantisation guide: QDQ format, unsigned 8-bit activations and signed weights (U8S8,
the x86 kernels' fast path: S8S8 ran MobileNetV2 at 347 samples/s here against U8S8's 565, with the same accuracy),
weights per channel, and ``reduce_range`` (7-bit weights) on x86 CPUs without VNNI, where U8S8 multiplies can
saturate; the calibration method (MinMax, Entropy, Percentile) is a run param. Models that take tokens
(transformers) are quantised dynamically instead, as the guide recommends for them: int8 weights, activations
scaled per batch at run time, so softmax, GELU and layer norms keep their range (static QDQ took all-MiniLM-L6-v2's
embeddings to a lowest cosine of 0.27).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np

from tasks.core.batching import Predict, is_token_input
from tasks.core.cpu import has_vnni
from tasks.core.files import local_path
from tasks.core.records import CompileConfig, CompiledArtifact, CompileReport, ExportedModel, PipelineParams
from tasks.targets.base import CompileError, ServingLayout, SingleFormatTarget, triton_layout

# Imported inside the methods that need them, so that only a worker that compiles or runs this target
# loads them: onnx, onnxruntime.

MODEL_FILE = "model.onnx"
FLAGS = {
    # EXTENDED, not ALL: fusions saved at ALL are specific to the compiling machine's CPU.
    "fp32": ["graph_optimization_level=ORT_ENABLE_EXTENDED"],
    "int8": ["quant_format=QDQ", "per_channel", "activation_type=QUInt8", "weight_type=QInt8"],
}
DYNAMIC_INT8 = ["quantize_dynamic", "per_channel", "weight_type=QInt8"]
CALIBRATION_METHODS = ("MinMax", "Entropy", "Percentile")


def quantised_dynamically(exported: ExportedModel) -> bool:
    """ONNX Runtime's guidance: dynamic quantisation for transformers (models that take tokens), static for CNNs."""
    return any(map(is_token_input, exported.inputs))


class _Calibration:
    """Feeds calibration batches to ONNX Runtime's quantiser (its CalibrationDataReader protocol)."""

    def __init__(self, samples: dict[str, np.ndarray], most: int = 16):
        count = len(next(iter(samples.values())))
        # equal batches: the histogram calibrators (Entropy, Percentile) stack them and fail on a shorter last one
        size = max(d for d in range(1, most + 1) if count % d == 0)
        self._batches = [{name: array[i : i + size] for name, array in samples.items()} for i in range(0, count, size)]
        self.rewind()

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._iterator, None)

    def rewind(self) -> None:
        self._iterator = iter(self._batches)


def count_operators(path: Path) -> int:
    import onnx

    return len(onnx.load(str(path), load_external_data=False).graph.node)


class OnnxRuntimeCPU(SingleFormatTarget):
    name = compiler = compiler_package = "onnxruntime"
    source_format = "onnx"
    device = "CPU"
    flags_by_precision = FLAGS
    runtime_requirements = ("onnxruntime",)

    def configs(self, precision: str, params: PipelineParams) -> list[CompileConfig]:
        method = params.calibration_method if precision == "int8" else None
        return [CompileConfig(target=self.name, precision=precision, calibration_method=method)]

    def flags(self, config: CompileConfig) -> list[str]:
        flags = super().flags(config)
        if config.precision != "int8":
            return flags
        method = config.calibration_method or "MinMax"
        if method not in CALIBRATION_METHODS:
            raise CompileError(
                f"unknown calibration method {method!r}; ONNX Runtime has {', '.join(CALIBRATION_METHODS)}"
            )
        return [*flags, f"calibrate={method}"] + ([] if has_vnni() else ["reduce_range"])

    def flags_for(self, exported: ExportedModel, config: CompileConfig) -> list[str]:
        """The flags of ``config`` for this model: int8 is dynamic for a transformer, static otherwise."""
        if config.precision == "int8" and quantised_dynamically(exported):
            return DYNAMIC_INT8 + ([] if has_vnni() else ["reduce_range"])
        return self.flags(config)

    def calibration_free(self, exported: ExportedModel, config: CompileConfig) -> bool:
        """Dynamic int8 scales activations at run time: it needs no calibration inputs."""
        return config.precision == "int8" and quantised_dynamically(exported)

    def available(self) -> tuple[bool, str]:
        if importlib.util.find_spec("onnxruntime") is None:
            return False, "onnxruntime is not installed"
        import onnxruntime

        if "CPUExecutionProvider" not in onnxruntime.get_available_providers():
            return False, "onnxruntime has no CPUExecutionProvider"
        return True, f"onnxruntime {onnxruntime.__version__}"

    def serving_layout(self, files: list[str]) -> ServingLayout | None:
        return triton_layout(files, MODEL_FILE, "onnxruntime_onnx")

    def compile(
        self,
        exported: ExportedModel,
        config: CompileConfig,
        out_dir: Path,
        calibration: dict[str, np.ndarray] | None,
    ) -> CompileReport:
        import onnxruntime as ort

        source = self.source(exported, config)
        target = out_dir / MODEL_FILE
        if config.precision == "fp32":
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
            options.optimized_model_filepath = str(target)
            ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
        elif self.calibration_free(exported, config):
            from onnxruntime.quantization import QuantType, quantize_dynamic
            from onnxruntime.quantization.shape_inference import quant_pre_process

            prepared = out_dir / "prepared.onnx"
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
            quantize_dynamic(
                str(prepared),
                str(target),
                per_channel=True,
                weight_type=QuantType.QInt8,
                reduce_range="reduce_range" in self.flags_for(exported, config),
            )
            prepared.unlink()
        else:
            from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
            from onnxruntime.quantization.shape_inference import quant_pre_process

            if not calibration:
                raise CompileError(
                    "int8 quantisation needs calibration data (the dataset's calibration inputs, never its "
                    "validation samples), and none was given"
                )
            flags = self.flags(config)
            method = next(f.removeprefix("calibrate=") for f in flags if f.startswith("calibrate="))
            prepared = out_dir / "prepared.onnx"
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
            quantize_static(
                str(prepared),
                str(target),
                _Calibration(calibration),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                reduce_range="reduce_range" in flags,
                calibrate_method=getattr(CalibrationMethod, method),
            )
            prepared.unlink()
        report = self.report(config, ort.__version__, count_operators(target))
        return report.model_copy(update={"flags": self.flags_for(exported, config)})

    @staticmethod
    def _session(artifact: CompiledArtifact, intra_op_threads: int) -> Predict:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = intra_op_threads
        session = ort.InferenceSession(
            str(local_path(artifact.uri) / MODEL_FILE), options, providers=["CPUExecutionProvider"]
        )

        names = [output.name for output in session.get_outputs()]

        def predict(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return dict(zip(names, session.run(None, inputs), strict=True))

        return predict

    def load(self, artifact: CompiledArtifact, batch_size: int) -> Predict:
        return self._session(artifact, os.cpu_count() or 1)

    def load_streams(
        self, artifact: CompiledArtifact, batch_size: int, in_flight: int
    ) -> tuple[list[Predict], dict[str, str]]:
        """``in_flight`` sessions, the cores shared out among them (ONNX Runtime's guidance for throughput: sessions
        x intra-op threads, not every session spinning a thread per core), and the settings used."""
        threads = max(1, (os.cpu_count() or 1) // in_flight)
        settings = {"sessions": str(in_flight), "intra_op_num_threads": str(threads)}
        return [self._session(artifact, threads) for _ in range(in_flight)], settings


TARGET = OnnxRuntimeCPU()
