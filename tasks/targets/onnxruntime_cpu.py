"""ONNX Runtime on CPU: fp32 with offline graph optimisation, int8 by static QDQ quantisation.

int8 is a QDQ model in the form ONNX Runtime's quantisation guide asks for: unsigned 8-bit activations and signed
weights (U8S8, the x86 kernels' fast path, faster than S8S8 at the same accuracy), weights per channel, activations per tensor (what QLinearConv takes), and 7-bit weights on x86 CPUs
without VNNI, where U8S8 multiplies can saturate.

By default NNCF's post-training quantisation writes it (``calibration_method`` NNCF): its fast bias correction
undoes the shift that quantised depthwise convolutions put on their outputs, which ONNX Runtime's own quantiser
does not (on MobileNetV2 the latter changes the top class of many photos, whatever its calibration method;
excluding the noisiest operators found by its QDQ debugging does not mend it). NNCF writes signed
activations where a range goes below zero and keeps clips before their quantisers, as OpenVINO wants them; the
same values are then written as ONNX Runtime's kernels take them (see :func:`for_onnxruntime_kernels`). ONNX
Runtime's own static quantiser stays a run param (calibration MinMax, Entropy or Percentile).

Models that take tokens (transformers) get NNCF's transformer recipe (``model_type=TRANSFORMER``: SmoothQuant, the
attention patterns, symmetric weights with asymmetric activations), static QDQ like the rest. ONNX Runtime's guide
recommends dynamic quantisation for transformers, which stays a run param (``calibration_method`` Dynamic: int8
weights, activations scaled per batch at run time, no calibration data); on all-MiniLM-L6-v2 the recipe passes the
gate's cosine and recall@5 where dynamic quantisation fails its cosine, at about the same speed, and ONNX Runtime's
own static quantiser ruins the embeddings (docs/benchmarks.md).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np

from tasks.core.batching import Predict
from tasks.core.cpu import has_vnni
from tasks.core.params import PipelineParams
from tasks.core.records import CompileConfig, CompiledArtifact, CompileReport, ExportedModel
from tasks.core.store import artifact_dir
from tasks.serving.runtimes import triton
from tasks.targets.base import (
    NO_CALIBRATION,
    CompileError,
    ServingLayout,
    SingleFormatTarget,
    calibration_items,
    takes_tokens,
)

# Imported inside the functions that need them, so that only a worker that compiles or runs this target
# loads them: onnx, onnxruntime, nncf.

MODEL_FILE = "model.onnx"
FLAGS = {
    # EXTENDED, not ALL: fusions saved at ALL are specific to the compiling machine's CPU.
    "fp32": ["graph_optimization_level=ORT_ENABLE_EXTENDED"],
    "int8": ["quant_format=QDQ", "per_channel", "activation_type=QUInt8", "weight_type=QInt8"],
}
DYNAMIC_INT8 = ["quantize_dynamic", "per_channel", "weight_type=QInt8"]
NNCF_INT8 = ["nncf.quantize", "preset=performance", "fast_bias_correction", "activations_per_tensor"]
NNCF_TRANSFORMER_INT8 = ["nncf.quantize", "model_type=transformer", "preset=mixed", "smooth_quant",
                         "fast_bias_correction", "activations_per_tensor"]  # fmt: skip
NNCF, DYNAMIC = "NNCF", "Dynamic"
# NNCF's, ONNX Runtime's dynamic quantiser, then ONNX Runtime's own static quantiser's
CALIBRATION_METHODS = (NNCF, DYNAMIC, "MinMax", "Entropy", "Percentile")


def nncf_flags(recipe: list[str]) -> list[str]:
    """An NNCF recipe's flags as this CPU runs them: 7-bit weights where there is no VNNI (see nncf_quantise)."""
    return recipe + ([] if has_vnni() else ["overflow_fix=enable"])


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


def for_onnxruntime_kernels(model) -> list[str]:
    """Rewrites NNCF's QDQ ``model`` in place into the form ONNX Runtime's CPU kernels fuse, with the same values:
    signed activation quantisers become unsigned ones on the same grid, and a Relu or Clip that its quantiser
    saturates within anyway is dropped (as ONNX Runtime's own quantiser drops it), so that each convolution sits
    between its quantisers and runs as QLinearConv. The report's notes."""
    constants = {tensor.name: tensor for tensor in model.graph.initializer}
    quantisers = [
        n
        for n in model.graph.node
        if n.op_type == "QuantizeLinear" and n.input[0] not in constants and n.input[2:3] and n.input[2] in constants
    ]
    shifted = _unsigned_activations(model, quantisers, constants)
    folded = _fold_bounded_activations(model, quantisers, constants)
    return [f"{shifted} signed activation quantisers written unsigned, {folded} Relu/Clip folded into the "
            "quantiser after them (same values, ONNX Runtime's fused int8 kernels)"]  # fmt: skip


def _unsigned_activations(model, quantisers: list, constants: dict) -> int:
    """int8 activation quantisers as uint8 ones with zero point + 128: the same grid of values, U8 for the x86
    kernels. A zero point a weight's DequantizeLinear shares stays signed. How many were shifted."""
    import onnx
    from onnx import numpy_helper

    weight_zero_points = {
        n.input[2] for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in constants
    }
    shifted, outputs = set(), set()
    for quantiser in quantisers:
        zero_point = constants[quantiser.input[2]]
        if zero_point.name in weight_zero_points:
            continue
        if zero_point.data_type == onnx.TensorProto.INT8 and zero_point.name not in shifted:
            unsigned = (numpy_helper.to_array(zero_point).astype(np.int16) + 128).astype(np.uint8)
            zero_point.CopyFrom(numpy_helper.from_array(unsigned, zero_point.name))  # the DequantizeLinear's too
            shifted.add(zero_point.name)
        if zero_point.name in shifted:
            outputs.add(quantiser.output[0])
    for info in model.graph.value_info:
        if info.name in outputs:
            info.type.tensor_type.elem_type = onnx.TensorProto.UINT8
    return len(shifted)


def _activation_bounds(node, constants: dict) -> tuple[float, float] | None:
    """A Relu's or Clip's output range; None for other operators and bounds computed at run time."""
    from onnx import numpy_helper

    if node.op_type == "Relu":
        return 0.0, np.inf
    if node.op_type != "Clip":
        return None
    limits = [-np.inf, np.inf]  # Clip's min and max inputs are optional
    for i, name in enumerate(node.input[1:3]):
        if name and name not in constants:
            return None
        if name:
            limits[i] = float(numpy_helper.to_array(constants[name]).item())
    return limits[0], limits[1]


def _fold_bounded_activations(model, quantisers: list, constants: dict) -> int:
    """Drops each Relu or Clip read only by a per-tensor quantiser whose range lies within its bounds: the
    quantiser's saturation clips the same. How many were dropped."""
    from onnx import numpy_helper

    producers = {output: node for node in model.graph.node for output in node.output}
    readers: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    graph_outputs = {output.name for output in model.graph.output}
    folded = 0
    for quantiser in quantisers:
        activation = producers.get(quantiser.input[0])
        limits = _activation_bounds(activation, constants) if activation is not None else None
        if limits is None or readers[activation.output[0]] > 1 or activation.output[0] in graph_outputs:
            continue
        scale = float(numpy_helper.to_array(constants[quantiser.input[1]]).max())
        zero_point = numpy_helper.to_array(constants[quantiser.input[2]])
        if zero_point.size != 1:
            continue
        levels = np.iinfo(zero_point.dtype)
        lowest = (levels.min - float(zero_point.item())) * scale
        highest = (levels.max - float(zero_point.item())) * scale
        slack = 1e-6 * max(1.0, abs(highest))  # float rounding: a 6 / 255 scale times 255 is not exactly 6
        if lowest >= limits[0] - slack and highest <= limits[1] + slack:
            quantiser.input[0] = activation.input[0]
            model.graph.node.remove(activation)
            folded += 1
    read = {name for node in model.graph.node for name in node.input}
    for unread in [t for t in model.graph.initializer if t.name not in read and t.name not in graph_outputs]:
        model.graph.initializer.remove(unread)  # a dropped Clip's bounds
    return folded


def nncf_quantise(
    source: Path, target: Path, calibration: dict[str, np.ndarray], transformer: bool = False
) -> list[str]:
    """NNCF post-training int8 of the ONNX model at ``source`` into ``target``, one calibration sample per item, in
    the form ONNX Runtime runs fast (see the module docstring); ``transformer``: NNCF's transformer recipe
    (SmoothQuant, attention patterns). The report's notes."""
    import onnx

    if importlib.util.find_spec("nncf") is None:
        raise CompileError("ONNX Runtime int8 by NNCF needs NNCF (pip install nncf), which is not installed; "
                           "calibration_method MinMax uses ONNX Runtime's own quantiser")  # fmt: skip
    import nncf
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        OverflowFix,
        QuantizationParameters,
    )

    model = onnx.load(str(source))
    constants = {t.name for t in model.graph.initializer}
    items = calibration_items(calibration, [i.name for i in model.graph.input if i.name not in constants])
    count = len(items)
    advanced = AdvancedQuantizationParameters(
        activations_quantization_params=QuantizationParameters(per_channel=False),
        # NNCF's fix for U8S8 saturation: 7-bit weights everywhere where there is no VNNI (reduce_range's role)
        overflow_fix=OverflowFix.FIRST_LAYER if has_vnni() else OverflowFix.ENABLE,
    )
    try:
        quantised = nncf.quantize(
            model,
            nncf.Dataset(items),
            # NNCF's transformer recipe: SmoothQuant, its attention patterns and, by leaving the preset to it,
            # symmetric weights with asymmetric activations (MIXED)
            **(
                {"model_type": nncf.ModelType.TRANSFORMER}
                if transformer
                else {"preset": nncf.QuantizationPreset.PERFORMANCE}
            ),
            subset_size=count,
            advanced_parameters=advanced,
        )
    except nncf.ValidationError as exc:  # e.g. calibration inputs the model cannot take
        raise CompileError(f"NNCF cannot quantise this model: {exc}") from exc
    notes = for_onnxruntime_kernels(quantised)
    onnx.save(quantised, str(target))
    convolutions = [n for n in quantised.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    quantised_inputs = {n.output[0] for n in quantised.graph.node if n.op_type == "DequantizeLinear"}
    int8 = [n for n in convolutions if n.input[0] in quantised_inputs]
    return [f"int8: {len(int8)} of {len(convolutions)} convolutions and matmuls quantised (NNCF, fast bias "
            f"correction, {count} calibration inputs)", *notes]  # fmt: skip


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
        method = self.calibration_method(config)
        if method not in CALIBRATION_METHODS:
            raise CompileError(
                f"unknown calibration method {method!r}; ONNX Runtime int8 has {', '.join(CALIBRATION_METHODS)}"
            )
        if method == NNCF:
            return nncf_flags(NNCF_INT8)
        if method == DYNAMIC:
            return DYNAMIC_INT8 + ([] if has_vnni() else ["reduce_range"])
        return [*flags, f"calibrate={method}"] + ([] if has_vnni() else ["reduce_range"])

    @staticmethod
    def calibration_method(config: CompileConfig) -> str:
        return config.calibration_method or NNCF

    def flags_for(self, exported: ExportedModel, config: CompileConfig) -> list[str]:
        """The flags of ``config`` for this model: NNCF's int8 of a transformer is its transformer recipe."""
        flags = self.flags(config)
        if config.precision == "int8" and self.calibration_method(config) == NNCF and takes_tokens(exported):
            return nncf_flags(NNCF_TRANSFORMER_INT8)
        return flags

    def calibration_free(self, exported: ExportedModel, config: CompileConfig) -> bool:
        """Dynamic int8 scales activations at run time: it needs no calibration inputs."""
        return config.precision == "int8" and self.calibration_method(config) == DYNAMIC

    def available(self) -> tuple[bool, str]:
        if importlib.util.find_spec("onnxruntime") is None:
            return False, "onnxruntime is not installed"
        import onnxruntime

        if "CPUExecutionProvider" not in onnxruntime.get_available_providers():
            return False, "onnxruntime has no CPUExecutionProvider"
        return True, f"onnxruntime {onnxruntime.__version__}"

    def serving_layout(self, files: list[str]) -> ServingLayout | None:
        return triton.layout(files, MODEL_FILE, "onnxruntime_onnx")

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
        notes: list[str] = []
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
        elif not calibration:
            raise CompileError(NO_CALIBRATION)
        elif self.calibration_method(config) == NNCF:
            notes = nncf_quantise(source, target, calibration, transformer=takes_tokens(exported))
        else:
            from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
            from onnxruntime.quantization.shape_inference import quant_pre_process

            flags = self.flags(config)
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
                calibrate_method=getattr(CalibrationMethod, self.calibration_method(config)),
            )
            prepared.unlink()
        report = self.report(config, ort.__version__, count_operators(target))
        return report.model_copy(update={"flags": self.flags_for(exported, config), "notes": notes})

    @staticmethod
    def _session(artifact: CompiledArtifact, intra_op_threads: int) -> Predict:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = intra_op_threads
        session = ort.InferenceSession(
            str(artifact_dir(artifact) / MODEL_FILE), options, providers=["CPUExecutionProvider"]
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
