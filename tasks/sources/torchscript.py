"""TorchScript sources: a ``torch.jit.save`` file. It carries no input specs, so they come from the params.

TorchScript cannot be captured by ``torch.export``, so TorchInductor does not take it;
the ONNX file comes from PyTorch's TorchScript-based exporter.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from tasks.core.batching import example_inputs, named_outputs
from tasks.core.files import file_ref, local_path, sha256_file
from tasks.core.params import PipelineParams
from tasks.core.records import ExportedModel
from tasks.sources.export import ModelLoadError, reconcile_specs, verified_format
from tasks.sources.pytorch import ONNX_OPSET, forward_check, output_specs, run_module

# Heavy, so imported inside the functions that need them (DAG parsing and most tasks never do): torch.

EXPORTER_PACKAGES = ("torch", "onnx")
CODE_NOTE = "TorchScript program from the model file runs (trust_model_code=true)"


def load_script(path: Path):
    import torch

    if not path.is_file():
        raise ModelLoadError(f"TorchScript file {path} does not exist")
    try:
        return torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as exc:
        raise ModelLoadError(
            f"{path} is not a loadable TorchScript file: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
        ) from exc


def export(params: PipelineParams, out_dir: Path) -> ExportedModel:
    import torch

    source = local_path(params.model_uri)
    if not params.trust_model_code:
        raise ModelLoadError(
            f"model {params.model_uri} is TorchScript, which carries code (the program in the file runs with the "
            "model); refused by default. Set trust_model_code=true for this model if you trust where it came "
            "from, or give a weights-only state dict with its architecture, or an ONNX file"
        )
    model = load_script(source)
    what = f"model {params.model_uri}"
    specs = reconcile_specs(None, params.input_specs, what)
    outputs = output_specs(forward_check(model, specs, what))
    script_path = out_dir / "model.torchscript.pt"
    shutil.copyfile(source, script_path)

    example = example_inputs(specs)
    torch.onnx.export(
        model,
        tuple(torch.from_numpy(example[s.name]) for s in specs),
        str(out_dir / "model.onnx"),
        input_names=[s.name for s in specs],
        output_names=[s.name for s in outputs],
        dynamic_axes={
            **{s.name: {s.batch_axis: "batch"} for s in specs},
            **{s.name: {0: "batch"} for s in outputs},
        },
        opset_version=ONNX_OPSET,
        dynamo=False,  # the dynamo exporter cannot read TorchScript
    )
    return ExportedModel(
        name=params.model_name,
        framework="torchscript",
        architecture="",
        source_uri=params.model_uri,
        source_sha256=sha256_file(source),
        parameters=sum(p.numel() for p in model.parameters()),
        inputs=specs,
        outputs=outputs,
        formats={"torchscript": file_ref(script_path), "onnx": file_ref(out_dir / "model.onnx")},
        model_code=CODE_NOTE,
    )


def load_reference(exported: ExportedModel):
    model = load_script(verified_format(exported, "torchscript", "TorchScript"))

    def predict(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return named_outputs(run_module(model, exported.inputs, inputs), [s.name for s in exported.outputs])

    return predict
