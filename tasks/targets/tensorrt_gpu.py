"""TensorRT on an NVIDIA GPU: the ONNX model built into a serialized engine plan (fp16, int8).

Available only where the ``tensorrt`` package and a CUDA GPU are present. The engine has an
optimisation profile over the batch axis (1 to the largest benchmarked batch); int8 is
calibrated with TensorRT's entropy calibrator on the calibration inputs, never validation data.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from tasks.core.batching import Predict
from tasks.core.records import CompileConfig, CompiledArtifact, CompileReport, ExportedModel
from tasks.core.store import artifact_dir
from tasks.serving.runtimes import triton
from tasks.targets.base import CompileError, ServingLayout, SingleFormatTarget, package_version

# Imported inside the methods that need them, so that only a worker that compiles or runs this target
# loads them: tensorrt, torch.

ENGINE_FILE = "model.plan"
MAX_BATCH = 64
BUILDER_FLAGS = {"fp16": ["FP16"], "int8": ["INT8", "FP16"]}


def _gpu_status() -> tuple[bool, str]:
    if importlib.util.find_spec("torch") is not None:
        import torch

        if torch.cuda.is_available():
            return True, torch.cuda.get_device_name(0)
        return False, "no CUDA GPU is visible (torch.cuda.is_available() is False)"
    return False, "cannot check for a GPU without torch"


def profile_shapes(exported: ExportedModel, max_batch: int = MAX_BATCH) -> dict[str, tuple[list, list, list]]:
    """(min, opt, max) shape of each input for the engine's optimisation profile over the batch axis."""
    shapes = {}
    for spec in exported.inputs:

        def at(batch: int, spec=spec) -> list[int]:
            return [batch if i == spec.batch_axis else d for i, d in enumerate(spec.shape)]

        shapes[spec.name] = (at(1), at(max(1, max_batch // 4)), at(max_batch))
    return shapes


class TensorRTGPU(SingleFormatTarget):
    name = compiler = compiler_package = "tensorrt"
    source_format = "onnx"
    device = "CUDA GPU"
    flags_by_precision = {
        precision: [f"BuilderFlag.{flag}" for flag in flags] + [f"max_batch={MAX_BATCH}"]
        for precision, flags in BUILDER_FLAGS.items()
    }
    runtime_requirements = ("tensorrt", "torch")
    serving_device = "gpu"
    # An engine is built for the GPU it runs on: TensorRT compiles on the GPU hosts, not on the CPU fleet.
    compile_queue = "gpu"
    run_queue = "gpu"

    def serving_layout(self, files: list[str]) -> ServingLayout | None:
        return triton.layout(files, ENGINE_FILE, "tensorrt_plan")

    def available(self) -> tuple[bool, str]:
        if importlib.util.find_spec("tensorrt") is None:
            return False, "the tensorrt package is not installed (it needs an NVIDIA GPU worker)"
        ok, why = _gpu_status()
        if not ok:
            return False, why
        return True, f"tensorrt {package_version('tensorrt') or 'installed'} on {why}"

    def compile(
        self,
        exported: ExportedModel,
        config: CompileConfig,
        out_dir: Path,
        calibration: dict[str, np.ndarray] | None,
    ) -> CompileReport:
        import tensorrt as trt

        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(self.source(exported, config))):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise CompileError(f"TensorRT cannot parse the ONNX model: {errors}")
        build_config = builder.create_builder_config()
        for flag in BUILDER_FLAGS[config.precision]:
            build_config.set_flag(getattr(trt.BuilderFlag, flag))
        profile = builder.create_optimization_profile()
        for name, (low, opt, high) in profile_shapes(exported).items():
            profile.set_shape(name, low, opt, high)
        build_config.add_optimization_profile(profile)
        if config.precision == "int8":
            if not calibration:
                raise CompileError("int8 needs calibration data")
            build_config.int8_calibrator = _calibrator(trt, calibration, out_dir / "calibration.cache")
            build_config.set_calibration_profile(profile)
        plan = builder.build_serialized_network(network, build_config)
        if plan is None:
            raise CompileError("TensorRT failed to build an engine (see the compile log)")
        (out_dir / ENGINE_FILE).write_bytes(bytes(plan))
        return self.report(config, trt.__version__, network.num_layers)

    def load(self, artifact: CompiledArtifact, batch_size: int) -> Predict:
        import tensorrt as trt
        import torch

        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        engine = runtime.deserialize_cuda_engine((artifact_dir(artifact) / ENGINE_FILE).read_bytes())
        context = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        stream = torch.cuda.Stream()

        def predict(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            held = {}
            for name in inputs:
                tensor = torch.from_numpy(np.ascontiguousarray(batch[name])).cuda()
                context.set_input_shape(name, tuple(tensor.shape))
                context.set_tensor_address(name, tensor.data_ptr())
                held[name] = tensor
            for name in outputs:
                dtype = getattr(torch, trt.nptype(engine.get_tensor_dtype(name)).__name__)
                out = torch.empty(tuple(context.get_tensor_shape(name)), dtype=dtype, device="cuda")
                context.set_tensor_address(name, out.data_ptr())
                held[name] = out
            context.execute_async_v3(stream.cuda_stream)
            stream.synchronize()
            return {name: held[name].float().cpu().numpy() for name in outputs}

        return predict


def _calibrator(trt, calibration: dict[str, np.ndarray], cache_path: Path, batch_size: int = 8):
    import torch

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            super().__init__()
            self.count = len(next(iter(calibration.values())))
            self.index = 0
            self.held = {}

        def get_batch_size(self) -> int:
            return batch_size

        def get_batch(self, names):
            if self.index + batch_size > self.count:
                return None
            self.held = {
                n: torch.from_numpy(np.ascontiguousarray(calibration[n][self.index : self.index + batch_size])).cuda()
                for n in names
            }
            self.index += batch_size
            return [self.held[n].data_ptr() for n in names]

        def read_calibration_cache(self):
            return cache_path.read_bytes() if cache_path.exists() else None

        def write_calibration_cache(self, cache):
            cache_path.write_bytes(bytes(cache))

    return EntropyCalibrator()


TARGET = TensorRTGPU()
