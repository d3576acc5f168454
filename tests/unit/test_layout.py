"""The tree shows the pipeline, and stays that way: no import cycles, no Airflow in tasks/, imports inside
functions only for heavy frameworks, target names only on the targets, and a registered model carries only
the code serving needs; each module does one thing (none over 400 lines), and each validation figure is named
where it is computed, in the table of figures and at most one more module."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tasks import targets
from tasks.core.figures import FIGURES
from tasks.core.settings import PROJECT_ROOT
from tasks.serving.pyfunc import serving_code

TASKS = PROJECT_ROOT / "tasks"
# Frameworks that take a second or more to import (or need a GPU/Neuron SDK): imported where they are used, so
# that parsing a DAG or starting a task that never calls them does not pay for them.
HEAVY = {
    "torch", "tensorflow", "mlflow", "onnx", "onnxruntime", "openvino", "great_expectations", "pandas", "matplotlib",
    "skimage", "sklearn", "keras", "tf2onnx", "tensorrt", "torch_neuron", "torch_neuronx", "boto3", "botocore",
    "redis", "cuda", "onnxscript", "transformers", "tokenizers", "safetensors", "nncf", "fsspec", "s3fs",
    "tritonclient", "tensorflow_serving", "google", "altair", "vl_convert",
}  # fmt: skip


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(TASKS.rglob("*.py")):
        name = ".".join(path.relative_to(PROJECT_ROOT).with_suffix("").parts).removesuffix(".__init__")
        found[name] = path
    return found


MODULES = _modules()


def _imports(path: Path, in_functions: bool | None = None) -> list[tuple[str, int]]:
    """(module, line) of every import in ``path``; only those inside (True) or outside (False) functions."""
    tree = ast.parse(path.read_text())
    inside: set[int] = set()
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            inside |= {id(n) for n in ast.walk(fn) if isinstance(n, ast.Import | ast.ImportFrom)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            if in_functions is not None and (id(node) in inside) != in_functions:
                continue
            if isinstance(node, ast.Import):
                found += [(alias.name, node.lineno) for alias in node.names]
            elif node.module and node.level == 0:
                found += [(node.module, node.lineno)]
                found += [(f"{node.module}.{alias.name}", node.lineno) for alias in node.names]
    return found


def _own(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def test_no_import_cycles_even_through_imports_inside_functions():
    edges = {m: set() for m in MODULES}
    for module, path in MODULES.items():
        for name, _ in _imports(path):
            own = _own(name)
            if own and own != module and not module.startswith(own + "."):
                edges[module].add(own)
    cycles = []

    def visit(node: str, stack: list[str], done: set[str]) -> None:
        for nxt in edges[node]:
            if nxt in stack:
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in done:
                visit(nxt, [*stack, nxt], done)
        done.add(node)

    done: set[str] = set()
    for module in MODULES:
        if module not in done:
            visit(module, [module], done)
    assert not cycles, cycles[:3]


def test_tasks_never_import_airflow():
    offenders = [f"{p.relative_to(PROJECT_ROOT)}:{line}" for p in MODULES.values() for n, line in _imports(p)
                 if n.split(".")[0] == "airflow"]  # fmt: skip
    assert not offenders


def _heavy_at_module_level() -> set[str]:
    """Our modules whose import loads a heavy framework (directly or through another of ours)."""
    heavy = {m for m, p in MODULES.items() if any(n.split(".")[0] in HEAVY for n, _ in _imports(p, False))}
    grew = True
    while grew:
        grew = False
        for module, path in MODULES.items():
            if module not in heavy and any(_own(n) in heavy for n, _ in _imports(path, False)):
                heavy.add(module)
                grew = True
    return heavy


def test_imports_inside_functions_are_only_of_heavy_frameworks_and_say_so():
    heavy_ours = _heavy_at_module_level()
    offenders = []
    for path in MODULES.values():
        for name, line in _imports(path, True):
            if name.split(".")[0] in HEAVY or _own(name) in heavy_ours:
                continue
            offenders.append(f"{path.relative_to(PROJECT_ROOT)}:{line} imports {name} inside a function")
    assert not offenders


def test_parsing_the_stages_loads_no_heavy_framework():
    code = (
        "import sys, tasks.stages.compile_pipeline, tasks.stages.promote_model, "
        "tasks.stages.retrain_to_deploy.train_and_export; "
        f"print(sorted(m for m in {sorted(HEAVY)!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _target_name_uses(path: Path) -> list[str]:
    """String constants equal to a registered target's name, outside docstrings and package-name tuples."""
    names = set(targets.names())
    tree = ast.parse(path.read_text())
    allowed = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id.endswith("PACKAGES") for t in node.targets
        ):
            allowed |= {id(n) for n in ast.walk(node.value)}  # fmt: skip
    return [f"{path.relative_to(PROJECT_ROOT)}:{n.lineno} {n.value!r}" for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and n.value in names and id(n) not in allowed]  # fmt: skip


def test_only_the_targets_and_their_registry_name_a_target():
    outside = [p for p in MODULES.values() if "targets" not in p.relative_to(TASKS).parts[:1]]
    offenders = [use for path in outside for use in _target_name_uses(path)]
    assert not offenders


@pytest.mark.parametrize("name", targets.names())
def test_every_target_carries_its_whole_interface(name):
    target = targets.get(name)
    for attribute in ("precisions", "runtime_requirements", "serving_device", "compile_queue", "run_queue"):
        assert getattr(target, attribute), attribute
    for method in ("available", "accepts", "configs", "fingerprint", "compile", "load", "copy_pinning",
                   "serving_layout"):  # fmt: skip
        assert callable(getattr(target, method)), method


def test_a_registered_model_carries_only_the_code_serving_needs(tmp_path):
    root = serving_code(tmp_path / "code")
    shipped = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.py"))
    assert "serving/pyfunc.py" in shipped and "targets/onnxruntime_cpu.py" in shipped
    assert not [p for p in shipped if p.startswith(("stages/", "report/", "benchmark/", "compile/"))], shipped
    assert not (tmp_path / "code" / "devtools").exists()
    loads = "import tasks.serving.pyfunc as m, tasks.targets as t; [t.get(n) for n in t.names()]; print(m.__file__)"
    out = subprocess.run([sys.executable, "-c", loads], cwd=tmp_path / "code", capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin"}, check=True)  # fmt: skip
    assert out.stdout.strip().startswith(str(tmp_path / "code"))


def test_no_module_in_tasks_is_over_400_lines():
    long = {name: n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) > 400}
    assert not long, f"split these along their jobs: {long}"


@pytest.mark.parametrize("figure", [f.name for f in FIGURES])
def test_each_validation_figure_is_named_in_at_most_three_modules(figure):
    """Its computation, the table (tasks/core/figures.py) and at most one more: the gate, the record stage, the
    registry's tags and the reports iterate FIGURES instead of naming it."""
    files = [*MODULES.values(), *TASKS.rglob("*.j2"), *TASKS.rglob("*.js")]
    naming = sorted(str(p.relative_to(TASKS)) for p in files if re.search(rf"\b{figure}\b", p.read_text()))
    assert len(naming) <= 3, naming
