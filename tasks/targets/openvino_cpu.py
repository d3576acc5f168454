"""OpenVINO on CPU: the model converted to IR; precision chosen with the CPU plugin's inference hint; int8 by NNCF.

int8 is NNCF's accuracy-aware post-training quantisation (``nncf.quantize_with_accuracy_control``) on the
calibration inputs: NNCF quantises, measures the figures the gate judges against the float model on those inputs
(metrics.quantiser_quality: the top-1 probability shift of class scores; the lowest cosine and recall@5 of
embeddings), and keeps the layers that cost the most in float until no figure uses more than half of the gate's
allowance. Where plain post-training quantisation is within it already, that is the result. The report lists the
layers left in float.

A transformer (a model that takes tokens) is quantised with NNCF's transformer recipe instead, as OpenVINO's and
optimum-intel's authors quantise BERT-like models: ``model_type=TRANSFORMER`` (SmoothQuant, the attention
patterns, symmetric weights with asymmetric activations), plain post-training quantisation. On all-MiniLM-L6-v2
the restorer takes minutes per round to rank its quantisers, and reverting the worst ones to float moves recall@5
on the calibration sentences down, not up (near-tie noise, not a layer's error), while the recipe alone passes
the gate (docs/benchmarks.md).
"""

from __future__ import annotations

import importlib.util
import re
import time
from pathlib import Path

import numpy as np

from tasks.core.batching import Done, Predict
from tasks.core.figures import quantiser_tolerance
from tasks.core.params import PipelineParams
from tasks.core.records import CompileConfig, CompiledArtifact, CompileReport, ExportedModel
from tasks.core.schema import TensorSpec
from tasks.core.store import artifact_dir
from tasks.serving.runtimes import openvino_server
from tasks.targets.base import (
    QUANTISER_SHARE,
    CompileError,
    ServingLayout,
    SingleFormatTarget,
    calibration_items,
    takes_tokens,
)
from tasks.validation.metrics import quantiser_quality

# Imported inside the functions that need them, so that only a worker that compiles or runs this target
# loads them: openvino, nncf.

MODEL_FILE = "model.xml"  # with model.bin beside it
# The CPU plugin silently runs bf16 on CPUs with AVX512_BF16 unless told otherwise,
# so every config states its precision explicitly.
PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}  # int8: what NNCF leaves unquantised runs f32
QUANTISER_FLAGS = ["nncf.quantize_with_accuracy_control", "preset=performance", "fast_bias_correction"]
TRANSFORMER_QUANTISER_FLAGS = ["nncf.quantize", "model_type=transformer", "preset=mixed", "smooth_quant",
                               "fast_bias_correction"]  # fmt: skip
# The operators int8 is about: whether NNCF put a quantiser on their activations tells int8 from float.
COMPUTE_OPS = ("Convolution", "GroupConvolution", "MatMul")
# NNCF's restorer keeps one more group of layers in float per iteration, without end by default: a bound on the
# compile time. Past it the model is what it is, and the gate judges it.
MAX_RESTORE_ITERATIONS = 8
LAYOUT_OPS = ("Reshape", "Squeeze", "Unsqueeze", "Transpose", "Convert")  # between a quantiser and its consumer


class OpenVINOCPU(SingleFormatTarget):
    name = compiler = compiler_package = "openvino"
    source_format = "onnx"
    device = "CPU"
    flags_by_precision = {
        precision: [f"INFERENCE_PRECISION_HINT={hint}", "compress_to_fp16=False"]
        + (QUANTISER_FLAGS if precision == "int8" else [])
        for precision, hint in PRECISION_HINTS.items()
    }
    runtime_requirements = ("openvino",)

    def serving_layout(self, files: list[str]) -> ServingLayout | None:
        return openvino_server.layout(files)

    def flags_for(self, exported: ExportedModel, config: CompileConfig) -> list[str]:
        """int8 of a transformer is NNCF's transformer recipe, not the accuracy-aware quantiser."""
        flags = self.flags(config)
        if config.precision == "int8" and takes_tokens(exported):
            return [flag for flag in flags if flag not in QUANTISER_FLAGS] + TRANSFORMER_QUANTISER_FLAGS
        return flags

    def configs(self, precision: str, params: PipelineParams) -> list[CompileConfig]:
        if precision != "int8":
            return super().configs(precision, params)
        tolerance = quantiser_tolerance(params)
        return [CompileConfig(target=self.name, precision=precision, quantiser_tolerance=tolerance)]

    def precision_missing(self, precision: str) -> str:
        if precision != "bf16":
            return ""
        import openvino as ov

        # the CPU plugin would run f32 under the bf16 hint: the same model as openvino-fp32, measured twice
        capabilities = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        return (
            "" if "BF16" in capabilities else f"this CPU has no bf16 support (OpenVINO lists {', '.join(capabilities)})"
        )

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
        notes = []
        if config.precision == "int8":
            if takes_tokens(exported):
                model = quantise_transformer(model, calibration)
            else:
                model = quantise(model, calibration, config)
            notes = quantisation_notes(model)
        # Weights stay fp32 in the IR; the precision is applied by the plugin when it compiles.
        ov.save_model(model, str(out_dir / MODEL_FILE), compress_to_fp16=False)
        # Compile once for the device so a config the plugin cannot run fails here, not in validation.
        ov.Core().compile_model(model, "CPU", self._device_config(config.precision))
        operators = sum(1 for op in model.get_ordered_ops() if op.get_type_name() not in ("Parameter", "Result"))
        report = self.report(config, ov.__version__, operators)
        return report.model_copy(update={"notes": notes}) if notes else report

    def _compiled_model(self, artifact: CompiledArtifact, batch_size: int, hint: str):
        import openvino as ov

        core = ov.Core()
        model = core.read_model(str(artifact_dir(artifact) / MODEL_FILE))
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
    ) -> tuple[InferQueue, dict[str, str]]:
        """``in_flight`` requests at once, in the mode OpenVINO's authors recommend for it, and the settings used.

        One request: the LATENCY hint (one CPU stream with every core). More: one model compiled with the
        THROUGHPUT hint (the plugin splits the cores into its own number of CPU streams). Either way the requests
        run from an ``AsyncInferQueue`` of ``in_flight`` jobs, as ``benchmark_app`` runs them, not from a Python
        thread per request. Not one compiled model per request: each would take every core.
        """
        hint = "LATENCY" if in_flight == 1 else "THROUGHPUT"
        compiled = self._compiled_model(artifact, batch_size, hint)
        settings = {
            "PERFORMANCE_HINT": hint,
            "NUM_STREAMS": str(compiled.get_property("NUM_STREAMS")),
            "OPTIMAL_NUMBER_OF_INFER_REQUESTS": str(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")),
        }
        return InferQueue(compiled, in_flight), settings


class InferQueue:
    """``size`` requests in flight on one compiled model through OpenVINO's ``AsyncInferQueue`` (a RequestQueue),
    driven as ``benchmark_app`` drives it: wait for a free request, start it; its callback says when it finished."""

    def __init__(self, compiled, size: int):
        import openvino as ov

        self.size = size
        self._queue = ov.AsyncInferQueue(compiled, size)

        def finished(_request, job: tuple[Done, float]) -> None:
            done, started = job
            done(time.perf_counter() - started)

        self._queue.set_callback(finished)

    def submit(self, inputs: dict[str, np.ndarray], done: Done) -> None:
        self._queue.get_idle_request_id()  # blocks until a request is free, so its clock starts when it does
        self._queue.start_async(inputs, (done, time.perf_counter()), share_inputs=True)

    def wait(self) -> None:
        self._queue.wait_all()


def quantise_transformer(model, calibration: dict[str, np.ndarray] | None):
    """NNCF's transformer recipe on the calibration inputs, one sample per item (see the module docstring)."""
    nncf = _nncf()
    items = calibration_items(calibration, [port.get_any_name() for port in model.inputs])
    try:
        return nncf.quantize(
            model, nncf.Dataset(items), model_type=nncf.ModelType.TRANSFORMER, subset_size=len(items)
        )  # the preset left to NNCF: MIXED for transformers
    except nncf.ValidationError as exc:  # e.g. calibration inputs the model cannot take
        raise CompileError(f"NNCF cannot quantise this model: {exc}") from exc


def _nncf():
    if importlib.util.find_spec("nncf") is None:
        raise CompileError("OpenVINO int8 needs NNCF (pip install nncf), which is not installed")
    import nncf

    return nncf


def quantise(model, calibration: dict[str, np.ndarray] | None, config: CompileConfig):
    """NNCF accuracy-aware int8 on the calibration inputs, one sample per item (see the module docstring)."""
    import openvino as ov

    nncf = _nncf()
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    names = [port.get_any_name() for port in model.inputs]
    items = calibration_items(calibration, names)
    count = len(items)
    dataset = nncf.Dataset(items)
    output_names = [port.get_any_name() for port in model.outputs]

    def outputs_of(compiled, data) -> dict[str, np.ndarray]:
        results = [compiled(item) for item in data]
        return {name: np.concatenate([r[i] for r in results]) for i, name in enumerate(output_names)}

    # The float model's outputs at f32, which quality is measured against (the CPU plugin's default is bf16), by
    # item: NNCF hands the validation function the items themselves, possibly a subset.
    float_model = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    reference = {id(item): float_model(item) for item in items}
    judged = config.judged_output if config.judged_output in output_names else None

    def validate(compiled, data) -> float:
        data = list(data)
        expected = {name: np.concatenate([reference[id(item)][i] for item in data]) for i, name in
                    enumerate(output_names)}  # fmt: skip
        return quantiser_quality(outputs_of(compiled, data), expected, judged, config.quantiser_tolerance)

    try:
        return nncf.quantize_with_accuracy_control(
            model,
            dataset,
            dataset,
            validate,
            max_drop=QUANTISER_SHARE,
            preset=nncf.QuantizationPreset.PERFORMANCE,
            subset_size=count,
            advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(
                max_num_iterations=MAX_RESTORE_ITERATIONS
            ),
        )
    except nncf.ValidationError as exc:  # e.g. calibration inputs the model cannot take
        raise CompileError(f"NNCF cannot quantise this model: {exc}") from exc


def quantisation_notes(model) -> list[str]:
    """How many compute operators NNCF made int8, and which it left in float (accuracy or pattern)."""

    def quantised_input(op) -> bool:
        source = op.input(0).get_source_output().get_node()
        while source.get_type_name() in LAYOUT_OPS and source.get_input_size():
            source = source.input(0).get_source_output().get_node()
        return source.get_type_name() == "FakeQuantize"

    compute = [op for op in model.get_ordered_ops() if op.get_type_name() in COMPUTE_OPS]
    in_float = [op.get_friendly_name() for op in compute if not quantised_input(op)]
    notes = [f"int8: {len(compute) - len(in_float)} of {len(compute)} convolutions and matmuls quantised (NNCF)"]
    if in_float:
        shown = ", ".join(in_float[:20]) + (f" and {len(in_float) - 20} more" if len(in_float) > 20 else "")
        notes.append(f"kept in float: {shown}")
    return notes


TARGET = OpenVINOCPU()
