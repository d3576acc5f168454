"""AWS Inferentia2 / Trainium (NeuronCore v2) through ``torch_neuronx.trace``, one artifact per batch size.

``torch_neuronx.trace(model, example_inputs, compiler_args=[...], compiler_workdir=...)`` compiles
with neuronx-cc on a CPU-only host; the NEFF is the one the compiler writes into its work dir.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tasks.core.batching import Predict, at_sequence_length, example_inputs, named_outputs
from tasks.core.params import PipelineParams
from tasks.core.records import CompileConfig, CompiledArtifact, CompileReport, ExportedModel, Fingerprint
from tasks.core.store import artifact_dir
from tasks.serving.runtimes import triton
from tasks.targets.base import (
    CompileError,
    CopyPinning,
    ServingLayout,
    TargetDefaults,
    package_version,
    read_signature,
    static_shape_configs,
    write_signature,
)
from tasks.targets.neuron import common

# Imported inside the methods that need them, so that only a worker that compiles or runs this target
# loads them: torch, torch_neuronx.

SDK = ("torch_neuronx", "torch-neuronx")
COMPILER = "neuronx-cc"
TORCHSCRIPT_FILE = "model.neuronx.pt"


def trace_kwargs(config: CompileConfig, workdir: Path) -> dict:
    """Keyword arguments of torch_neuronx.trace for one config."""
    return {"compiler_args": common.neuronx_cc_args(config.precision), "compiler_workdir": str(workdir)}


class NeuronInf2(TargetDefaults):
    name = "neuron-inf2"
    precisions = tuple(common.NEURONX_CC_CAST)
    runtime_requirements = ("torch-neuronx",)
    serving_device = "neuron"
    compile_queue = (
        "compile"  # neuronx-cc runs on any CPU; a Neuron compile worker image (docker/Dockerfile.neuron-inf2)
    )
    run_queue = "inf2"

    def configs(self, precision: str, params: PipelineParams) -> list[CompileConfig]:
        return static_shape_configs(self.name, precision, params)  # a NEFF fixes the batch size and sequence length

    def copy_pinning(self, artifact: CompiledArtifact) -> CopyPinning:
        return common.copy_pinning(1)  # torch_neuronx.trace compiles for one NeuronCore

    def serving_layout(self, files: list[str]) -> ServingLayout | None:
        return triton.layout(files, TORCHSCRIPT_FILE, "pytorch_libtorch", "model.pt")

    def available(self) -> tuple[bool, str]:
        return common.sdk_status(*SDK)

    def precision_missing(self, precision: str) -> str:
        return ""  # the NeuronCores run every precision the compiler casts to

    def accepts(self, exported: ExportedModel) -> str:
        if exported.framework not in ("pytorch", "torchscript", "huggingface"):
            return f"{self.name} compiles PyTorch models (torch_neuronx.trace), not {exported.framework}"
        if common.torch_source_format(exported):
            return ""
        return "torch_neuronx.trace needs the model as an architecture + state dict, TorchScript or Hugging Face"

    def fingerprint(self, exported: ExportedModel, config: CompileConfig) -> Fingerprint:
        if config.precision not in common.NEURONX_CC_CAST:
            raise CompileError(f"{self.name} cannot compile precision {config.precision!r}")
        if not config.batch_size:
            raise CompileError(f"{self.name} compiles for a fixed batch size; the config has none")
        return Fingerprint(
            compiler=COMPILER,
            compiler_version=package_version("neuronx-cc"),
            flags=common.neuronx_cc_args(config.precision),
            source_format=common.torch_source_format(exported),
        )

    def compile(
        self,
        exported: ExportedModel,
        config: CompileConfig,
        out_dir: Path,
        calibration: dict[str, np.ndarray] | None,
    ) -> CompileReport:
        import torch
        import torch_neuronx  # the real SDK, in the Neuron worker image only

        fingerprint = self.fingerprint(exported, config)
        model = common.traceable_module(exported)
        example = example_inputs(at_sequence_length(exported.inputs, config.sequence_length), config.batch_size)
        workdir = out_dir.parent / f".{config.key}.neuronx-workdir"
        traced = torch_neuronx.trace(
            model, tuple(torch.from_numpy(example[s.name]) for s in exported.inputs), **trace_kwargs(config, workdir)
        )
        torch.jit.save(traced, str(out_dir / TORCHSCRIPT_FILE))
        write_signature(out_dir, exported)  # the traced module takes and gives tensors by position
        neffs = common.collect_workdir_neffs(workdir, out_dir)
        return CompileReport(
            compiler=COMPILER,
            compiler_version=fingerprint.compiler_version,
            flags=fingerprint.flags,
            device="NeuronCore v2 (inf2/trn1)",
            device_binaries=neffs,
            notes=["torch_neuronx.trace compiles the whole graph for Neuron; it does not partition to CPU"],
        )

    def load(self, artifact: CompiledArtifact, batch_size: int) -> Predict:
        import torch
        import torch_neuronx  # noqa: F401  (registers the Neuron ops)

        directory = artifact_dir(artifact)
        module = torch.jit.load(str(directory / TORCHSCRIPT_FILE))
        input_names, output_names = read_signature(directory)

        def predict(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            with torch.inference_mode():
                outputs = module(*(torch.from_numpy(inputs[name]) for name in input_names))
            return {k: v.numpy() for k, v in named_outputs(outputs, output_names, self.name).items()}

        return predict


TARGET = NeuronInf2()
