"""TensorFlow/Keras sources: a SavedModel directory with a ``serving_default`` signature.

The signature carries the input specs. The SavedModel itself is kept (Neuron's
``tensorflow.neuron.saved_model.compile`` and OpenVINO read it) and converted to ONNX
with tf2onnx for the other targets. ``builtin:keras_digits`` trains a Keras model first.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np

from tasks.core.batching import example_inputs
from tasks.core.files import dir_ref, file_ref, local_path, tree_sha256
from tasks.core.params import PipelineParams
from tasks.core.records import ExportedModel
from tasks.core.schema import TensorSpec
from tasks.models.keras_digits import train_and_save
from tasks.sources.export import ModelLoadError, check_outputs, reconcile_specs, verified_format

# Heavy, so imported inside the functions that need them (DAG parsing and most tasks never do): tensorflow, tf2onnx.

SIGNATURE = "serving_default"
ONNX_OPSET = 17  # tf2onnx 1.17's newest well-tested opset
EXPORTER_PACKAGES = ("tensorflow", "tensorflow-cpu", "keras", "tf2onnx", "onnx")  # "" for the one not installed


def _load_signature(path: Path, shown: Path | str | None = None):
    """The loaded SavedModel at ``path`` and its serving signature; errors name ``shown`` (the user's copy)."""
    import tensorflow as tf

    shown = shown or path
    if not (path / "saved_model.pb").is_file():
        raise ModelLoadError(f"{shown} is not a TensorFlow SavedModel directory (no saved_model.pb)")
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as exc:  # truncated or corrupt graph, missing variables, ...
        first_line = (str(exc).strip().splitlines() or [""])[0][:400]
        raise ModelLoadError(
            f"TensorFlow cannot load the SavedModel {shown} (truncated, corrupt or incomplete?): "
            f"{type(exc).__name__}: {first_line}"
        ) from exc
    if SIGNATURE not in loaded.signatures:
        raise ModelLoadError(
            f"SavedModel {shown} has no {SIGNATURE!r} signature (it has {sorted(loaded.signatures)}); "
            "export it with a serving signature"
        )
    return loaded, loaded.signatures[SIGNATURE]


def _spec(name: str, tf_spec) -> TensorSpec:
    shape = tf_spec.shape.as_list()
    dims: list[int | str] = [d if d is not None else ("batch" if i == 0 else f"dim{i}") for i, d in enumerate(shape)]
    return TensorSpec(name=name, shape=dims, dtype=tf_spec.dtype.as_numpy_dtype.__name__)


def signature_specs(signature) -> tuple[list[TensorSpec], list[TensorSpec]]:
    _, kwargs = signature.structured_input_signature
    inputs = [_spec(name, spec) for name, spec in sorted(kwargs.items())]
    outputs = [_spec(name, spec) for name, spec in sorted(signature.structured_outputs.items())]
    return inputs, outputs


def run_signature(signature, specs: list[TensorSpec], inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The signature's outputs by name, in sorted order (as a traced function flattens them)."""
    import tensorflow as tf

    result = signature(**{s.name: tf.constant(inputs[s.name]) for s in specs})
    return {name: result[name].numpy() for name in sorted(result)}


def weights_sha256(loaded) -> str:
    """sha256 over a loaded SavedModel's variables (dtype, shape, values), in the model's order.

    The identity of a model trained inside the pipeline: seeded, deterministic training gives
    the same weights every run, while the SavedModel it writes differs in generated names
    (variable names too: Keras numbers layers per process, conv2d_1 on the second build).
    """
    digest = hashlib.sha256()
    for variable in loaded.variables:
        value = variable.numpy()
        digest.update(f"{value.dtype}|{value.shape}|".encode() + value.tobytes())
    return digest.hexdigest()


def to_onnx(signature, specs: list[TensorSpec], path: Path) -> None:
    import tensorflow as tf
    import tf2onnx

    @tf.autograph.experimental.do_not_convert
    def serve(*tensors):
        return signature(**{s.name: t for s, t in zip(specs, tensors, strict=True)})

    input_signature = [
        tf.TensorSpec([d if isinstance(d, int) else None for d in s.shape], tf.as_dtype(s.dtype), name=s.name)
        for s in specs
    ]
    tf2onnx.convert.from_function(
        tf.function(serve), input_signature=input_signature, opset=ONNX_OPSET, output_path=str(path)
    )


def export(params: PipelineParams, out_dir: Path) -> ExportedModel:
    saved_model = out_dir / "saved_model"
    if params.model_uri == "builtin:keras_digits":
        train_and_save(saved_model)
        source_sha256 = ""  # the trained weights' digest, below: SavedModel bytes differ between exports
    else:
        source = local_path(params.model_uri)
        if not source.is_dir():
            raise ModelLoadError(f"TensorFlow model {source} is not a SavedModel directory")
        source_sha256 = tree_sha256(source)
        shutil.copytree(source, saved_model)
    loaded, signature = _load_signature(saved_model, shown=params.model_uri)
    declared, outputs = signature_specs(signature)
    what = f"model {params.model_uri}"
    specs = reconcile_specs(declared, params.input_specs, what)
    try:
        results = run_signature(signature, specs, example_inputs(specs))
    except Exception as exc:
        raise ModelLoadError(f"{what}: the serving signature fails on a random input: {exc}") from exc
    check_outputs(list(results.values()), what)
    to_onnx(signature, specs, out_dir / "model.onnx")
    parameters = int(sum(np.prod(v.shape) for v in getattr(loaded, "variables", []) if v.trainable))
    source_sha256 = source_sha256 or weights_sha256(loaded)
    return ExportedModel(
        name=params.model_name,
        framework="tensorflow",
        architecture="",
        source_uri=params.model_uri,
        source_sha256=source_sha256,
        parameters=parameters,
        inputs=specs,
        outputs=outputs,
        formats={"saved_model": dir_ref(saved_model), "onnx": file_ref(out_dir / "model.onnx")},
    )


def load_reference(exported: ExportedModel):
    """The SavedModel's serving signature, run by TensorFlow on CPU."""
    _, signature = _load_signature(verified_format(exported, "saved_model", "SavedModel"))

    def predict(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return run_signature(signature, exported.inputs, inputs)

    return predict
