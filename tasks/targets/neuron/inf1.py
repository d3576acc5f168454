"""AWS Inferentia (inf1, NeuronCore v1) through the documented SDK calls, one artifact per batch size.

- TensorFlow: ``tensorflow.neuron.saved_model.compile(model_dir, new_model_dir, batch_size=...,
  dynamic_batch_size=..., compiler_args=[...])``; the NEFFs are the ``executable`` attribute of the
  ``NeuronOp`` nodes of the compiled graph.
- PyTorch: ``torch.neuron.trace(model, example_inputs, compiler_args=..., dynamic_batch_size=...,
  fallback=..., compiler_workdir=...)``; the NEFFs are the ones the compiler leaves in its work dir.

Compiles on any CPU host that has the SDK (the Neuron compile-worker image in docker/); runs on inf1.
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path

import numpy as np

from tasks.core.batching import Predict, at_sequence_length, example_inputs, named_outputs
from tasks.core.params import PipelineParams
from tasks.core.records import CompileConfig, CompiledArtifact, CompileReport, ExportedModel, Fingerprint
from tasks.core.store import artifact_dir, fetch
from tasks.serving.runtimes import tf_serving, triton
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
# loads them: tensorflow, torch, torch_neuron.

TF_SDK = ("tensorflow.neuron", "tensorflow-neuron")
TORCH_SDK = ("torch_neuron", "torch-neuron")
COMPILER = "neuron-cc"
SAVED_MODEL_DIR = "saved_model"
TORCHSCRIPT_FILE = "model.neuron.pt"


def compiler_args(exported: ExportedModel, config: CompileConfig) -> list[str]:
    cores = config.pipeline_cores
    if cores is None:
        cores = common.default_pipeline_cores(exported.parameters)
    return common.neuron_cc_args(config.precision, cores)


def tf_compile_kwargs(config: CompileConfig, args: list[str]) -> dict:
    """Keyword arguments of tensorflow.neuron.saved_model.compile for one fixed-batch config."""
    return {"batch_size": config.batch_size, "dynamic_batch_size": False, "compiler_args": args}


def torch_trace_kwargs(args: list[str], workdir: Path) -> dict:
    """Keyword arguments of torch.neuron.trace: operators neuron-cc rejects fall back to CPU."""
    return {"compiler_args": args, "dynamic_batch_size": False, "fallback": True, "compiler_workdir": str(workdir)}


@contextlib.contextmanager
def captured_logs(*names: str):
    """Collect what the SDK logs (its operator counts) while still printing it to the compile log."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    loggers = [logging.getLogger(n) for n in names]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(min(logger.level or logging.INFO, logging.INFO))
    try:
        yield buffer
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
        print(buffer.getvalue(), flush=True)


def report_for(config: CompileConfig, args: list[str], counts: dict, neffs, version: str, notes=()) -> CompileReport:
    if counts.get("operators_on_device") == 0:
        raise common.UncompiledGraph("the compiler placed no operator on Neuron")
    return CompileReport(
        compiler=COMPILER,
        compiler_version=version,
        flags=args,
        device="NeuronCore v1 (inf1)",
        operators_total=counts.get("operators_total"),
        operators_on_device=counts.get("operators_on_device"),
        device_binaries=neffs,
        notes=list(notes),
    )


class NeuronInf1(TargetDefaults):
    name = "neuron-inf1"
    precisions = tuple(common.NEURON_CC_CAST)
    runtime_requirements = ("tensorflow-neuron", "torch-neuron")
    serving_device = "neuron"
    compile_queue = (
        "compile"  # neuron-cc runs on any CPU; a Neuron compile worker image (docker/Dockerfile.neuron-inf1)
    )
    run_queue = "inf1"

    def configs(self, precision: str, params: PipelineParams) -> list[CompileConfig]:
        """One per batch size (a NEFF is compiled for one), pipelined over the params' NeuronCores."""
        return static_shape_configs(self.name, precision, params, pipeline_cores=params.neuron_pipeline_cores)

    def copy_pinning(self, artifact: CompiledArtifact) -> CopyPinning:
        """A copy spans its pipeline's NeuronCores (``--neuroncore-pipeline-cores``), each copy in its own process."""
        return common.copy_pinning(common.pipeline_cores_in(artifact.report.flags if artifact.report else []))

    def serving_layout(self, files: list[str]) -> ServingLayout | None:
        # TensorFlow: the Neuron SavedModel under TF Serving; PyTorch: the traced TorchScript under Triton
        return tf_serving.layout(files) or triton.layout(files, TORCHSCRIPT_FILE, "pytorch_libtorch", "model.pt")

    def available(self) -> tuple[bool, str]:
        statuses = [common.sdk_status(*TF_SDK), common.sdk_status(*TORCH_SDK)]
        if any(ok for ok, _ in statuses):
            return True, "; ".join(why for ok, why in statuses if ok)
        return False, "; ".join(why for _, why in statuses)

    def precision_missing(self, precision: str) -> str:
        return ""  # the NeuronCores run every precision the compiler casts to

    def accepts(self, exported: ExportedModel) -> str:
        if exported.framework == "tensorflow":
            ok, why = common.sdk_status(*TF_SDK)
            return "" if ok else why
        if exported.framework in ("pytorch", "torchscript", "huggingface"):
            ok, why = common.sdk_status(*TORCH_SDK)
            if not ok:
                return why
            if common.torch_source_format(exported):
                return ""
            return "torch.neuron.trace needs the model as an architecture + state dict, TorchScript or Hugging Face"
        return f"{self.name} compiles TensorFlow, PyTorch and Hugging Face models, not {exported.framework}"

    def fingerprint(self, exported: ExportedModel, config: CompileConfig) -> Fingerprint:
        if config.precision not in common.NEURON_CC_CAST:
            raise CompileError(f"{self.name} cannot compile precision {config.precision!r}")
        if not config.batch_size:
            raise CompileError(f"{self.name} compiles for a fixed batch size; the config has none")
        tensorflow = exported.framework == "tensorflow"
        return Fingerprint(
            compiler=COMPILER,
            compiler_version=package_version("neuron-cc"),
            flags=compiler_args(exported, config),
            source_format="saved_model" if tensorflow else common.torch_source_format(exported),
        )

    def compile(
        self,
        exported: ExportedModel,
        config: CompileConfig,
        out_dir: Path,
        calibration: dict[str, np.ndarray] | None,
    ) -> CompileReport:
        args = self.fingerprint(exported, config).flags
        if exported.framework == "tensorflow":
            return self._compile_tensorflow(exported, config, args, out_dir)
        return self._compile_torch(exported, config, args, out_dir)

    def _compile_tensorflow(self, exported, config, args, out_dir: Path) -> CompileReport:
        import tensorflow.neuron as tfn  # the real SDK, in the Neuron worker image only

        target = out_dir / SAVED_MODEL_DIR
        with captured_logs("tensorflow", "Neuron") as logs:
            summary = tfn.saved_model.compile(
                str(fetch(exported.formats["saved_model"])), str(target), **tf_compile_kwargs(config, args)
            )
        counts = common.parse_tf_compile_log(logs.getvalue())
        neffs = common.extract_saved_model_neffs(target, out_dir)
        notes = [f"tensorflow-neuron summary: {summary}"] if summary else []
        return report_for(config, args, counts, neffs, package_version("neuron-cc"), notes)

    def _compile_torch(self, exported, config, args, out_dir: Path) -> CompileReport:
        import torch
        import torch_neuron  # noqa: F401  (registers torch.neuron)

        model = common.traceable_module(exported)
        example = example_inputs(at_sequence_length(exported.inputs, config.sequence_length), config.batch_size)
        workdir = out_dir.parent / f".{config.key}.neuron-workdir"
        with captured_logs("Neuron") as logs:
            traced = torch.neuron.trace(
                model,
                tuple(torch.from_numpy(example[s.name]) for s in exported.inputs),
                **torch_trace_kwargs(args, workdir),
            )
        torch.jit.save(traced, str(out_dir / TORCHSCRIPT_FILE))
        write_signature(out_dir, exported)  # the traced module takes and gives tensors by position
        counts = common.parse_torch_neuron_log(logs.getvalue())
        neffs = common.collect_workdir_neffs(workdir, out_dir)
        return report_for(config, args, counts, neffs, package_version("neuron-cc"))

    def load(self, artifact: CompiledArtifact, batch_size: int) -> Predict:
        directory = artifact_dir(artifact)
        if (directory / SAVED_MODEL_DIR).is_dir():
            import tensorflow as tf
            import tensorflow.neuron  # noqa: F401  (registers NeuronOp)

            signature = tf.saved_model.load(str(directory / SAVED_MODEL_DIR)).signatures["serving_default"]

            def predict_tf(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
                result = signature(**{k: tf.constant(v) for k, v in inputs.items()})
                return {name: value.numpy() for name, value in result.items()}

            return predict_tf
        import torch
        import torch_neuron  # noqa: F401

        module = torch.jit.load(str(directory / TORCHSCRIPT_FILE))
        input_names, output_names = read_signature(directory)

        def predict_torch(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            with torch.inference_mode():
                outputs = module(*(torch.from_numpy(inputs[name]) for name in input_names))
            return {k: v.numpy() for k, v in named_outputs(outputs, output_names, self.name).items()}

        return predict_torch


TARGET = NeuronInf1()
