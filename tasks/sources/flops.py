"""FLOPs per sample of a model, counted on its ONNX graph (every source exports one).

Counts the dense layers that carry almost all the arithmetic of vision and language
models: Conv, ConvTranspose, Gemm and MatMul, as 2 x multiply-adds at batch size 1
(the convention of torch.utils.flop_counter and of published model tables).
"""

from __future__ import annotations

import math
from pathlib import Path

# Heavy, so imported inside the functions that need them (DAG parsing and most tasks never do): onnx, onnxscript.


def _shapes(model) -> dict[str, list[int]]:
    graph = model.graph
    shapes = {init.name: list(init.dims) for init in graph.initializer}
    for value in [*graph.input, *graph.output, *graph.value_info]:
        dims = value.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = [d.dim_value for d in dims]
    return shapes


def count_onnx(path: str | Path) -> int:
    """FLOPs for one sample; every symbolic input dimension (the batch axis) is set to 1 first."""
    import onnx
    import onnxscript.optimizer

    model = onnx.load(str(path))
    for value in model.graph.input:
        for dim in value.type.tensor_type.shape.dim:
            if not dim.HasField("dim_value"):
                dim.dim_value = 1
    # With the inputs static, the optimizer folds the shape arithmetic (Shape -> Gather -> Concat -> Reshape)
    # that exporters write for dynamic axes; without it, shape inference leaves a transformer's MatMuls unknown.
    try:
        model = onnxscript.optimizer.optimize(model)
    except Exception:  # noqa: BLE001 - an optimizer that cannot fold this graph: count on the graph as written
        pass
    model = onnx.shape_inference.infer_shapes(model, data_prop=True)
    shapes = _shapes(model)
    macs = 0
    for node in model.graph.node:
        ins = [shapes.get(name) for name in node.input]
        out = shapes.get(node.output[0]) if node.output else None
        if node.op_type in ("Conv", "ConvTranspose") and ins[1] and out:
            weight = ins[1]  # Conv: [out, in/groups, *kernel]; ConvTranspose: [in, out/groups, *kernel]
            kernel = math.prod(weight[2:])
            if node.op_type == "Conv":
                macs += math.prod(out) * weight[1] * kernel
            else:
                macs += math.prod(ins[0]) * weight[1] * kernel
        elif node.op_type == "Gemm" and ins[0] and ins[1] and out:
            trans_a = next((a.i for a in node.attribute if a.name == "transA"), 0)
            k = ins[0][0] if trans_a else ins[0][1]
            macs += math.prod(out) * k
        elif node.op_type == "MatMul" and ins[0] and out:
            macs += math.prod(out) * ins[0][-1]
    return 2 * macs
