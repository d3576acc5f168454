"""What the Neuron targets share, none of it needing the SDK: compiler flags, the pipeline-core
rule, reading the compiler's log, and pulling the NEFF files (the NeuronCore executables) out of a
compiled model.

References: neuron-cc CLI and mixed-precision guide (inf1: ``--fast-math`` cast methods,
``--neuroncore-pipeline-cores``), neuronx-cc CLI (inf2/trn1: ``--auto-cast``, ``--auto-cast-type``),
the NeuronCore pipeline app note (4 cores per 20 M weights, rounded).
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path

from tasks.core.files import sha256_file
from tasks.core.records import NamedFile
from tasks.core.store import fetch
from tasks.sources import huggingface
from tasks.sources.pytorch import load_state_dict_model
from tasks.targets.base import CopyPinning, package_version

# Imported inside the methods that need them, so that only a worker that compiles or runs this target
# loads them: tensorflow, torch.

# inf1 (neuron-cc): by default it casts fp32 to bf16 ("--fast-math all"); each precision is explicit.
NEURON_CC_CAST = {
    "fp32": ["--fast-math", "none"],
    "bf16": ["--fast-math", "fp32-cast-matmult"],
    "fp16": ["--fast-math", "fp32-cast-matmult-fp16"],
}
# inf2/trn1 (neuronx-cc)
NEURONX_CC_CAST = {
    "fp32": ["--auto-cast", "none"],
    "bf16": ["--auto-cast", "matmult", "--auto-cast-type", "bf16"],
    "fp16": ["--auto-cast", "matmult", "--auto-cast-type", "fp16"],
}
NEFF_DIR = "neff"
# The runtime of each process claims the NeuronCores listed here ("2" or a range "4-7") when it loads a model.
VISIBLE_CORES_ENV = "NEURON_RT_VISIBLE_CORES"
WEIGHTS_PER_PIPELINE_STEP = 2e7


def default_pipeline_cores(parameters: int) -> int:
    """The pipelining guide's rule, 4 x round(weights / 2e7); 0 means no pipelining (small models)."""
    return 4 * round(parameters / WEIGHTS_PER_PIPELINE_STEP)


def neuron_cc_args(precision: str, pipeline_cores: int) -> list[str]:
    try:
        args = list(NEURON_CC_CAST[precision])
    except KeyError:
        raise ValueError(f"neuron-cc has no cast method for precision {precision!r}") from None
    if pipeline_cores > 1:
        args += ["--neuroncore-pipeline-cores", str(pipeline_cores)]
    return args


def neuronx_cc_args(precision: str) -> list[str]:
    try:
        return list(NEURONX_CC_CAST[precision])
    except KeyError:
        raise ValueError(f"neuronx-cc has no auto-cast type for precision {precision!r}") from None


_TOTAL = re.compile(r"Number of operations in TensorFlow session:\s*(\d+)")
_ON_NEURON = re.compile(r"Number of operations placed on Neuron runtime:\s*(\d+)")
_TORCH_COMPILED = re.compile(r"Number of arithmetic operators \(post-compilation\) before = (\d+), compiled = (\d+)")


def parse_tf_compile_log(text: str) -> dict[str, int]:
    """Operator counts as tensorflow-neuron logs them; the last figures win (one compile may retry)."""
    found = {}
    for key, pattern in (("operators_total", _TOTAL), ("operators_on_device", _ON_NEURON)):
        values = pattern.findall(text)
        if values:
            found[key] = int(values[-1])
    return found


def parse_torch_neuron_log(text: str) -> dict[str, int]:
    """Operator counts as torch-neuron logs them after partitioning ("before = 175, compiled = 175")."""
    values = _TORCH_COMPILED.findall(text)
    if not values:
        return {}
    total, compiled = values[-1]
    return {"operators_total": int(total), "operators_on_device": int(compiled)}


def neuron_op_executables(graph_def) -> dict[str, bytes]:
    """``executable`` attribute (a NEFF) of every ``NeuronOp`` node, in the graph and its function library."""
    found: dict[str, bytes] = {}
    nodes = [("", node) for node in graph_def.node]
    for function in graph_def.library.function:
        nodes += [(function.signature.name, node) for node in function.node_def]
    for scope, node in nodes:
        if node.op == "NeuronOp" and "executable" in node.attr:
            name = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{scope}.{node.name}" if scope else node.name)
            found[name] = node.attr["executable"].s
    return found


def extract_saved_model_neffs(saved_model_dir: Path, out_dir: Path) -> list[NamedFile]:
    """Write each NeuronOp's NEFF from a compiled SavedModel to ``out_dir/neff/``; fail if there are none."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((saved_model_dir / "saved_model.pb").read_bytes())
    executables: dict[str, bytes] = {}
    for meta_graph in proto.meta_graphs:
        executables.update(neuron_op_executables(meta_graph.graph_def))
    if not executables:
        raise UncompiledGraph(
            "the compiled SavedModel has no NeuronOp with an executable: the graph was left uncompiled "
            "(tensorflow-neuron does this silently when neuron-cc is missing or rejects every subgraph)"
        )
    return write_neffs(executables, out_dir)


def write_neffs(executables: dict[str, bytes], out_dir: Path) -> list[NamedFile]:
    target = out_dir / NEFF_DIR
    target.mkdir(parents=True, exist_ok=True)
    files = []
    for name, payload in sorted(executables.items()):
        path = target / f"{name}.neff"
        path.write_bytes(payload)
        files.append(NamedFile(name=str(path.relative_to(out_dir)), sha256=sha256_file(path), size=len(payload)))
    return files


def collect_workdir_neffs(workdir: Path, out_dir: Path) -> list[NamedFile]:
    """NEFFs the compiler wrote into its work directory (torch-neuron and torch-neuronx both do)."""
    found = {
        re.sub(r"[^A-Za-z0-9._-]+", "_", str(p.relative_to(workdir).with_suffix(""))): p.read_bytes()
        for p in sorted(workdir.rglob("*.neff"))
    }
    if not found:
        raise UncompiledGraph(f"the Neuron compiler wrote no NEFF file under {workdir}: nothing runs on Neuron")
    return write_neffs(found, out_dir)


def torch_source_format(exported) -> str | None:
    """The format the Neuron tracers read: architecture + state dict, else TorchScript, else none. A Hugging Face
    export is traced from its source directory, as the module its ExportedProgram captured."""
    if exported.framework == "huggingface":
        return "exported_program" if "exported_program" in exported.formats else None
    return next((f for f in ("pytorch_state_dict", "torchscript") if f in exported.formats), None)


def traceable_module(exported):
    """The model as the Neuron tracers take it: rebuilt from architecture + state dict, or from a Hugging Face
    directory, or TorchScript."""
    import torch

    fmt = torch_source_format(exported)
    if exported.framework == "huggingface":
        return huggingface.rebuilt_module(exported)
    if fmt == "pytorch_state_dict":
        return load_state_dict_model(fetch(exported.formats[fmt]), exported.architecture)
    return torch.jit.load(str(fetch(exported.formats["torchscript"])))


class UncompiledGraph(RuntimeError):
    """A "compiled" model with nothing placed on Neuron."""


def sdk_status(module: str, distribution: str) -> tuple[bool, str]:
    """Whether the real SDK package is importable; PyPI's same-named placeholders raise on import."""

    # Read the distribution's metadata first: importing tensorflow just to find no tensorflow.neuron costs seconds.
    if not package_version(distribution) or importlib.util.find_spec(module.split(".")[0]) is None:
        return False, f"{distribution} is not installed (the Neuron SDK comes from its package repository; see docker/)"
    try:
        importlib.import_module(module)
    except ImportError as exc:
        return False, f"{distribution} cannot be imported ({str(exc).splitlines()[0][:200]})"
    return True, f"{distribution} {package_version(distribution)}"


def pipeline_cores_in(flags: list[str]) -> int:
    """NeuronCores one copy of a model spans: its ``--neuroncore-pipeline-cores``, else 1."""
    if "--neuroncore-pipeline-cores" in flags:
        return int(flags[flags.index("--neuroncore-pipeline-cores") + 1])
    return 1


def neuroncore_count() -> int:
    """NeuronCores on this host, summed over the devices ``neuron-ls --json-output`` lists; 0 without the tools."""
    if not shutil.which("neuron-ls"):
        return 0
    listed = subprocess.run(["neuron-ls", "--json-output"], capture_output=True, text=True, timeout=60)
    if listed.returncode != 0 or not listed.stdout.strip():
        return 0
    return sum(int(device.get("nc_count") or 0) for device in json.loads(listed.stdout))


def core_groups(copies: int, cores_per_copy: int) -> list[str]:
    """Disjoint NEURON_RT_VISIBLE_CORES values for ``copies`` copies: "0", "1", ... or "0-3", "4-7", ..."""
    if cores_per_copy == 1:
        return [str(i) for i in range(copies)]
    return [f"{i * cores_per_copy}-{(i + 1) * cores_per_copy - 1}" for i in range(copies)]


def copy_pinning(cores_per_copy: int) -> CopyPinning:
    """As many copies as this host's NeuronCores hold, each pinned to its own cores."""
    return CopyPinning(VISIBLE_CORES_ENV, core_groups(max(1, neuroncore_count() // cores_per_copy), cores_per_copy))
