"""PyTorch sources: a weights-only state dict plus a named architecture, or ``module:callable``.

Either way the model is captured once with ``torch.export`` (an ExportedProgram, saved
as ``model.pt2``; TorchInductor compiles from it and the baseline runs it) and
exported to ONNX with a dynamic batch axis (the other CPU and GPU targets start there).
"""

from __future__ import annotations

import hashlib
import importlib
import pickletools
import zipfile
from pathlib import Path

import numpy as np

from tasks import models
from tasks.core.batching import example_inputs, named_outputs
from tasks.core.files import file_ref, sha256_file
from tasks.core.params import PipelineParams
from tasks.core.records import ExportedModel
from tasks.core.schema import TensorSpec
from tasks.core.settings import code_refusal
from tasks.sources.export import (
    BUILTIN_MODELS,
    ONNX_OPSET,
    ModelLoadError,
    check_outputs,
    reconcile_specs,
    resolve_source,
    verified_format,
)

# Heavy, so imported inside the functions that need them (DAG parsing and most tasks never do): torch.

# Input specs of the built-in modules, which (like any nn.Module) do not carry them.
BUILTIN_SPECS = {
    "module:tasks.models.resnet50:build_random": [
        TensorSpec(name="input", shape=["batch", 3, 224, 224], dtype="float32")
    ],
    "module:tasks.models.text_encoder:build": [
        TensorSpec(name="input_ids", shape=["batch", 32], dtype="int64"),
        TensorSpec(name="attention_mask", shape=["batch", 32], dtype="int64"),
    ],
}
MAX_BATCH = 1024
EXPORTER_PACKAGES = ("torch", "onnx", "onnxscript")


# Modules a state dict's pickle may name (tensors, storages, OrderedDict); torch.load(weights_only=True)
# then enforces its own, narrower list of callables within them.
WEIGHTS_MODULES = ("torch", "collections")
STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING", "STRING"}
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # first pickle of a pre-zip torch.save file; four more follow, then raw bytes


def _pickle_globals(data: bytes) -> list[str]:
    """``module.name`` of every global a pickle stream imports, read opcode by opcode (nothing is unpickled)."""
    found, strings, position, pickles = [], [], 0, 1
    while pickles > 0 and position < len(data):
        pickles -= 1
        for opcode, arg, pos in pickletools.genops(data[position:]):
            if opcode.name in STRING_OPS:
                strings.append(str(arg))
            elif opcode.name in ("GLOBAL", "INST"):
                found.append(str(arg).replace(" ", "."))
            elif opcode.name == "STACK_GLOBAL":
                found.append(".".join(strings[-2:]) if len(strings) >= 2 else "<unknown>")
            elif arg == LEGACY_MAGIC and position == 0:
                pickles = 4
            if opcode.name == "STOP":
                position += pos + 1
                break
    return found


def code_in_pickle(path: Path) -> list[str]:
    """Globals outside the weights modules that the file's pickles import: code a full unpickle would run."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            streams = [archive.read(name) for name in archive.namelist() if name.endswith(".pkl")]
    else:
        streams = [path.read_bytes()]
    names = [name for stream in streams for name in _pickle_globals(stream)]
    return sorted({n for n in names if n.split(".")[0] not in WEIGHTS_MODULES})


def read_pickled_state_dict(path: Path) -> dict:
    """A .pt/.pth state dict, read weights-only after its pickle is checked to import no code."""
    import torch

    try:
        code = code_in_pickle(path)
    except Exception as exc:  # pickletools raises ValueError and others on a truncated or corrupt stream
        raise ModelLoadError(
            f"model file {path} is truncated or corrupt (its pickle cannot be read: {type(exc).__name__}: {exc})"
        ) from exc
    if code:
        raise ModelLoadError(
            f"model file {path} carries code (its pickle imports {', '.join(code[:5])}); refused: only weights are "
            "read from a .pt/.pth file and it is never unpickled. Save the weights with "
            "torch.save(model.state_dict(), path), or give a TorchScript/ONNX export"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or corrupt files
        raise ModelLoadError(
            f"model file {path} is not a readable weights-only PyTorch state dict (truncated or corrupt?): "
            f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
        ) from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelLoadError(f"model file {path} does not hold a state dict of tensors")
    return state


def read_safetensors(path: Path) -> dict:
    """A .safetensors state dict: a JSON header and raw tensor bytes, no pickle involved at all."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelLoadError(
            f"model file {path} is not a readable safetensors file (truncated or corrupt?): {exc}"
        ) from exc


def load_state_dict_model(path: Path, architecture: str):
    """Rebuild ``architecture`` and load a weights-only state dict (.pt/.pth or .safetensors) into it; nothing in
    the file is executed."""
    if path.is_dir():
        hint = " with config.json: set framework to huggingface" if (path / "config.json").is_file() else ""
        raise ModelLoadError(f"model {path} is a directory{hint}; a PyTorch state dict is one file")
    if not path.is_file():
        raise ModelLoadError(f"model file {path} does not exist")
    if path.stat().st_size == 0:
        raise ModelLoadError(f"model file {path} is empty")
    state = read_safetensors(path) if path.suffix == ".safetensors" else read_pickled_state_dict(path)
    model = models.build(architecture)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ModelLoadError(
            f"weights in {path} do not fit architecture {architecture!r}: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )
    try:
        model.load_state_dict(state, strict=True)  # also checks tensor shapes
    except RuntimeError as exc:
        raise ModelLoadError(f"weights in {path} do not fit architecture {architecture!r}: {exc}") from exc
    return model.eval()


def state_dict_sha256(model) -> str:
    """sha256 over a module's parameters and buffers (name, dtype, shape, raw bytes), in state-dict order."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        value = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{value.dtype}|{list(tensor.shape)}|".encode())
        digest.update(value.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def load_callable(spec: str):
    """``module:pkg.mod:fn`` -> the nn.Module that ``fn()`` returns (the user's own, trusted code)."""
    import torch

    target = spec.removeprefix("module:")
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ModelLoadError(f"model_uri {spec!r} must look like module:package.module:callable")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ModelLoadError(f"cannot import {attr!r} from {module_name!r}: {exc}") from exc
    model = factory()
    if not isinstance(model, torch.nn.Module):
        raise ModelLoadError(f"{target}() returned {type(model).__name__}, not a torch.nn.Module")
    return model.eval()


def run_module(model, specs: list[TensorSpec], inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    import torch

    with torch.inference_mode():
        outputs = model(*(torch.from_numpy(np.ascontiguousarray(inputs[s.name])) for s in specs))
    if isinstance(outputs, torch.Tensor):
        outputs = (outputs,)
    return [o.float().numpy() if o.is_floating_point() else o.numpy() for o in outputs]


def forward_check(model, specs: list[TensorSpec], what: str) -> list[np.ndarray]:
    inputs = example_inputs(specs)
    try:
        outputs = run_module(model, specs, inputs)
    except Exception as exc:
        shapes = {name: list(a.shape) for name, a in inputs.items()}
        raise ModelLoadError(f"{what}: the forward pass fails on inputs shaped {shapes}: {exc}") from exc
    check_outputs(outputs, what)
    return outputs


def output_specs(outputs: list[np.ndarray], names: list[str] | None = None) -> list[TensorSpec]:
    names = names or (["logits"] if len(outputs) == 1 else [f"output_{i}" for i in range(len(outputs))])
    return [
        TensorSpec(name=name, shape=["batch", *o.shape[1:]], dtype=str(o.dtype))
        for name, o in zip(names, outputs, strict=True)
    ]


def export_args(specs: list[TensorSpec]) -> tuple[tuple, tuple]:
    """Example tensors in spec order and their dynamic shapes (batch axis 1..MAX_BATCH), for torch.export."""
    import torch

    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    example = example_inputs(specs)
    return tuple(torch.from_numpy(example[s.name]) for s in specs), tuple({s.batch_axis: batch} for s in specs)


def export_onnx(model, specs: list[TensorSpec], outputs: list[TensorSpec], path: Path) -> None:
    import torch

    args, dynamic_shapes = export_args(specs)
    program = torch.onnx.export(
        model,
        args,
        input_names=[s.name for s in specs],
        output_names=[s.name for s in outputs],
        dynamic_shapes=dynamic_shapes,
        opset_version=ONNX_OPSET,
        dynamo=True,
        external_data=False,
    )
    program.save(str(path))


def export_program(model, specs: list[TensorSpec], path: Path) -> None:
    import torch

    args, dynamic_shapes = export_args(specs)
    torch.export.save(torch.export.export(model, args, dynamic_shapes=dynamic_shapes), str(path))


def export(params: PipelineParams, out_dir: Path) -> ExportedModel:
    import torch

    uri = BUILTIN_MODELS.get(params.model_uri, (None, params.model_uri))[1]
    model_code = ""
    if uri.startswith("module:"):
        why_not = code_refusal(uri.split(":")[1], params.trust_model_code, f"model {uri}", "trust_model_code")
        if why_not:
            raise ModelLoadError(why_not)
        model_code = f"factory {uri} ran: " + (
            "trust_model_code=true" if params.trust_model_code else "its module is under TRUSTED_CODE_MODULES"
        )
        model = load_callable(uri)
        # What the model is: the factory's code and the weights it loaded (from wherever it read them).
        code_sha256 = sha256_file(Path(importlib.import_module(uri.split(":")[1]).__file__))
        source_sha256 = hashlib.sha256(f"{code_sha256}\0{state_dict_sha256(model)}".encode()).hexdigest()
        declared, architecture = BUILTIN_SPECS.get(uri), ""
    else:
        source = resolve_source(uri)
        model = load_state_dict_model(source, params.architecture)
        source_sha256 = sha256_file(source)
        declared, architecture = [models.input_spec(params.architecture)], params.architecture
    what = f"model {params.model_uri}"
    specs = reconcile_specs(declared, params.input_specs, what)
    outputs = output_specs(forward_check(model, specs, what))

    formats = {}
    if architecture:
        torch.save(model.state_dict(), out_dir / "model.pt")
        formats["pytorch_state_dict"] = file_ref(out_dir / "model.pt")
    export_program(model, specs, out_dir / "model.pt2")
    formats["exported_program"] = file_ref(out_dir / "model.pt2")
    export_onnx(model, specs, outputs, out_dir / "model.onnx")
    formats["onnx"] = file_ref(out_dir / "model.onnx")
    return ExportedModel(
        name=params.model_name,
        framework="pytorch",
        architecture=architecture,
        source_uri=params.model_uri,
        source_sha256=source_sha256,
        parameters=sum(p.numel() for p in model.parameters()),
        inputs=specs,
        outputs=outputs,
        formats=formats,
        model_code=model_code,
    )


def load_reference(exported: ExportedModel):
    """The exported program, run by PyTorch eagerly on CPU."""
    import torch

    module = torch.export.load(str(verified_format(exported, "exported_program", "program"))).module()

    def predict(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return named_outputs(run_module(module, exported.inputs, inputs), [s.name for s in exported.outputs])

    return predict
