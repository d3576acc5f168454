"""ONNX sources: a model file whose graph declares its inputs; the baseline is ONNX Runtime, unoptimised."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tasks.core.batching import example_inputs
from tasks.core.files import file_ref, local_path, sha256_file
from tasks.core.params import PipelineParams
from tasks.core.records import ExportedModel
from tasks.core.schema import TensorSpec
from tasks.sources.export import ModelLoadError, check_outputs, reconcile_specs, verified_format

# Heavy, so imported inside the functions that need them (DAG parsing and most tasks never do): onnx, onnxruntime.

EXPORTER_PACKAGES = ("onnx", "onnxruntime")  # onnx rewrites the file whole; onnxruntime checks it runs


def _specs(values, skip: set[str]) -> list[TensorSpec]:
    from onnx.helper import tensor_dtype_to_np_dtype

    specs = []
    for value in values:
        if value.name in skip:  # initialisers listed as inputs are weights, not inputs
            continue
        tensor = value.type.tensor_type
        dims: list[int | str] = []
        for i, dim in enumerate(tensor.shape.dim):
            if dim.HasField("dim_value"):
                dims.append(int(dim.dim_value))
            else:
                dims.append(dim.dim_param or ("batch" if i == 0 else f"dim{i}"))
        specs.append(TensorSpec(name=value.name, shape=dims, dtype=tensor_dtype_to_np_dtype(tensor.elem_type).name))
    return specs


def graph_specs(model) -> tuple[list[TensorSpec], list[TensorSpec]]:
    weights = {init.name for init in model.graph.initializer}
    return _specs(model.graph.input, weights), _specs(model.graph.output, set())


def reference_session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    # The baseline is the model as written, so no graph rewrites: they are what targets are judged on.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def export(params: PipelineParams, out_dir: Path) -> ExportedModel:
    import onnx

    source = local_path(params.model_uri)
    if not source.is_file():
        raise ModelLoadError(f"ONNX model file {source} does not exist")
    try:
        model = onnx.load(str(source))  # external data, if any, is read from beside the file
        onnx.checker.check_model(model)
    except Exception as exc:
        raise ModelLoadError(f"{source} is not a valid ONNX model: {type(exc).__name__}: {exc}") from exc
    declared, outputs = graph_specs(model)
    what = f"model {params.model_uri}"
    specs = reconcile_specs(declared, params.input_specs, what)
    target = out_dir / "model.onnx"
    onnx.save(model, str(target))  # one self-contained file, so later stages need nothing beside it
    try:
        results = reference_session(target).run(None, example_inputs(specs))
    except Exception as exc:
        raise ModelLoadError(f"{what}: ONNX Runtime fails on a random input: {exc}") from exc
    check_outputs(results, what)
    return ExportedModel(
        name=params.model_name,
        framework="onnx",
        architecture="",
        source_uri=params.model_uri,
        source_sha256=sha256_file(source),
        parameters=int(sum(np.prod(init.dims) for init in model.graph.initializer)),
        inputs=specs,
        outputs=outputs,
        formats={"onnx": file_ref(target)},
    )


def load_reference(exported: ExportedModel):
    session = reference_session(verified_format(exported, "onnx", "ONNX model"))

    names = [output.name for output in session.get_outputs()]

    def predict(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(names, session.run(None, inputs), strict=True))

    return predict
