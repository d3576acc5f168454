"""What a model *is*, as the compilers read it: a digest of an exported format's graph and weights.

The compile cache keys on it (tasks.compile.cache), so a change anywhere upstream (a source file, a module the
factory imports, a weight file, a remote object) that changes the graph is a miss, and nothing else is.

- ONNX: a canonical digest. Tensor names inside the graph are renamed in order of first use (tf2onnx, for one,
  names deduplicated constants and dynamic dims differently from one process to the next), node names, doc
  strings and producer metadata are left out; operators, attributes, topology, the graph's own inputs and outputs (the interface) and
  every weight's dtype, shape and bytes are in.
- Any other format (a ``.pt2`` ExportedProgram, TorchScript, a state dict, a SavedModel directory): its bytes'
  sha256 (a directory's tree sha256). A format whose bytes vary from export to export only costs a cache miss.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

# Heavy, so imported inside the functions that need them: onnx.

ONNX_FORMAT = "onnx"


def onnx_graph_sha256(path: Path) -> str:
    import onnx

    model = onnx.load(str(path), load_external_data=True)
    digest = hashlib.sha256()
    for opset in sorted((o.domain, o.version) for o in model.opset_import):
        digest.update(f"opset {opset[0]} {opset[1]}\n".encode())
    _graph(model.graph, digest)
    return digest.hexdigest()


def _graph(graph, digest) -> None:
    from onnx import numpy_helper

    interface = {v.name for v in graph.input} | {v.name for v in graph.output}
    names: dict[str, str] = {}

    def canonical(name: str) -> str:
        if not name or name in interface:
            return name
        return names.setdefault(name, f"%{len(names)}")

    symbols: dict[str, str] = {}  # dynamic dims' names (tf2onnx: unk__38 in one run, unk__77 in the next)

    def typed(value) -> bytes:
        tensor = value.type.tensor_type
        dims = [str(d.dim_value) if d.HasField("dim_value") else symbols.setdefault(d.dim_param, f"?{len(symbols)}")
                for d in tensor.shape.dim]  # fmt: skip
        return f" {value.name} {tensor.elem_type} [{','.join(dims)}]".encode()

    for value in graph.input:
        digest.update(b"input" + typed(value))
    for node in graph.node:
        digest.update(f"node {node.domain}::{node.op_type}".encode())
        digest.update(("(" + ",".join(canonical(n) for n in node.input) + ")").encode())
        digest.update(("->(" + ",".join(canonical(n) for n in node.output) + ")").encode())
        for attribute in sorted(node.attribute, key=lambda a: a.name):
            digest.update(b" @" + attribute.name.encode())
            if attribute.HasField("t"):  # a Constant's tensor: its values, not its (arbitrary) name
                digest.update(_tensor_bytes(numpy_helper, attribute.t))
            elif attribute.HasField("g"):
                _graph(attribute.g, digest)
            else:
                digest.update(attribute.SerializeToString(deterministic=True))
        digest.update(b"\n")
    for initializer in sorted(graph.initializer, key=lambda t: canonical(t.name)):
        digest.update(b"weight " + canonical(initializer.name).encode() + b" ")
        digest.update(_tensor_bytes(numpy_helper, initializer))
    for value in graph.output:
        digest.update(b"output" + typed(value))


def _tensor_bytes(numpy_helper, tensor) -> bytes:
    array = numpy_helper.to_array(tensor)
    return f"{array.dtype.str}{list(array.shape)}".encode() + hashlib.sha256(array.tobytes()).digest()
