"""TorchInductor ahead-of-time on CPU: the exported program compiled to a ``.pt2`` package (C++ and weights).

bf16 casts the weights, the floating-point inputs and the float32 tensors the graph makes itself (an attention mask
from integer ids) to bfloat16 inside the compiled graph, so callers still pass and receive float32.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import threading
from pathlib import Path

import numpy as np

from tasks.core.batching import Predict, named_outputs
from tasks.core.cpu import bf16_missing
from tasks.core.records import CompileConfig, CompiledArtifact, CompileReport, ExportedModel
from tasks.core.store import artifact_dir
from tasks.serving.runtimes import triton
from tasks.sources.pytorch import export_args
from tasks.targets.base import (
    ServingLayout,
    SingleFormatTarget,
    package_version,
    read_signature,
    write_signature,
)

# Imported inside the methods that need them, so that only a worker that compiles or runs this target
# loads them: torch.

PACKAGE_FILE = "model.pt2"
DTYPES = {"fp32": "float32", "bf16": "bfloat16"}


def _cast_module(module, dtype_name: str):
    """Wrap ``module`` (an exported program's graph module) so it runs in ``dtype_name`` but takes and returns
    float32."""
    import torch

    dtype = getattr(torch, dtype_name)
    # The graph states float32 wherever it makes a float tensor itself (a mask from integer ids, a cast, a
    # constant); left so, it meets the cast activations in one operator, which attention refuses.
    for node in module.graph.nodes:
        if node.op == "call_function":
            node.args = tuple(dtype if arg is torch.float32 else arg for arg in node.args)
            if node.kwargs.get("dtype") is torch.float32:
                node.kwargs = {**node.kwargs, "dtype": dtype}
    module.recompile()

    class Cast(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner.to(dtype)

        def forward(self, *inputs):
            outputs = self.inner(*(x.to(dtype) if x.is_floating_point() else x for x in inputs))
            if isinstance(outputs, torch.Tensor):
                return outputs.float()
            return tuple(o.float() if o.is_floating_point() else o for o in outputs)

    return Cast(module)


class InductorCPU(SingleFormatTarget):
    name = "inductor"
    compiler = "torch-inductor-aot"
    compiler_package = "torch"
    source_format = "exported_program"
    device = "CPU"
    # dynamic_threads: the C++ asks OpenMP for its thread count at each call; by default Inductor writes the
    # compiling process's count into every parallel loop, and streams running at once would oversubscribe the cores.
    flags_by_precision = {
        precision: ["aoti_compile_and_package", f"dtype={dtype}", "cpp.dynamic_threads"]
        for precision, dtype in DTYPES.items()
    }
    runtime_requirements = ("torch",)

    def serving_layout(self, files: list[str]) -> ServingLayout | None:
        return triton.layout(files, PACKAGE_FILE, "pytorch")

    def precision_missing(self, precision: str) -> str:
        # PyTorch emulates bf16 where the CPU lacks it, orders of magnitude slower than fp32
        return bf16_missing() if precision == "bf16" else ""

    def available(self) -> tuple[bool, str]:
        if importlib.util.find_spec("torch") is None:
            return False, "torch is not installed"

        compiler = shutil.which("g++") or shutil.which("c++")
        if not compiler:
            return False, "TorchInductor AOT needs a C++ compiler (g++) and none is on PATH"
        return True, f"torch {package_version('torch')} with {compiler}"

    def compile(
        self,
        exported: ExportedModel,
        config: CompileConfig,
        out_dir: Path,
        calibration: dict[str, np.ndarray] | None,
    ) -> CompileReport:
        import torch

        program = torch.export.load(str(self.source(exported, config)))
        if config.precision != "fp32":
            args, dynamic_shapes = export_args(exported.inputs)
            program = torch.export.export(
                _cast_module(program.module(), DTYPES[config.precision]),
                args,
                dynamic_shapes=(dynamic_shapes,),  # the wrapper takes one *inputs parameter
            )
        operators = sum(1 for node in program.graph.nodes if node.op == "call_function")
        with torch._inductor.config.patch({"cpp.dynamic_threads": True}):
            torch._inductor.aoti_compile_and_package(program, package_path=str(out_dir / PACKAGE_FILE))
        # The package takes inputs and gives outputs by position; keep their names' order beside it.
        write_signature(out_dir, exported)
        return self.report(config, torch.__version__, operators)

    def load(self, artifact: CompiledArtifact, batch_size: int) -> Predict:
        return self._runner(artifact, runners=1, threads=None)

    def load_streams(
        self, artifact: CompiledArtifact, batch_size: int, in_flight: int
    ) -> tuple[list[Predict], dict[str, str]]:
        """``in_flight`` model runners in one package loader (one runner serialises concurrent calls), the cores
        shared out among them as OpenMP threads, and the settings used (Triton's instance count and
        INTRA_OP_THREAD_COUNT)."""
        threads = max(1, (os.cpu_count() or 1) // in_flight)
        predict = self._runner(artifact, runners=in_flight, threads=threads)
        return [predict] * in_flight, {"runners": str(in_flight), "intra_op_num_threads": str(threads)}

    def _runner(self, artifact: CompiledArtifact, runners: int, threads: int | None) -> Predict:
        import torch
        from torch._inductor.package import load_package

        directory = artifact_dir(artifact)
        runner = load_package(str(directory / PACKAGE_FILE), num_runners=runners)
        input_names, output_names = read_signature(directory)
        calling = threading.local()  # OpenMP's thread count is per calling thread: set it once in each stream

        def predict(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            if threads and getattr(calling, "threads", None) != threads:
                torch.set_num_threads(threads)
                calling.threads = threads
            with torch.inference_mode():
                outputs = runner(*(torch.from_numpy(inputs[name]) for name in input_names))
            return {k: v.numpy() for k, v in named_outputs(outputs, output_names, self.name).items()}

        return predict


TARGET = InductorCPU()
