"""The registered model: an MLflow pyfunc that runs the compiled artifact with its own runtime.

``mlflow models serve -m models:/<name>@champion`` loads this class. The part of the ``tasks`` package it
imports travels inside the model (``code_paths``, see :func:`serving_code`): this module, the records, and
the targets that load compiled artifacts; no pipeline stage, no local tooling.
"""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import mlflow.pyfunc
import numpy as np

from tasks import targets
from tasks.core.batching import ArrayInputs, run_batched
from tasks.core.files import to_uri
from tasks.core.records import CompiledArtifact
from tasks.core.schema import TensorSpec
from tasks.core.settings import PROJECT_ROOT

SERVING_BATCH = 8


class CompiledModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        record = json.loads(Path(context.artifacts["artifact_record"]).read_text())
        self.inputs = [TensorSpec.model_validate(spec) for spec in record.pop("inputs")]
        record.pop("outputs", None)
        recorded = CompiledArtifact.model_validate(record)
        # The artifact now lives where MLflow downloaded it, not where it was compiled.
        self.artifact = recorded.model_copy(update={"uri": to_uri(context.artifacts["compiled"])})
        self.batch_size = self.artifact.config.batch_size or SERVING_BATCH
        self._predict = targets.get(self.artifact.config.target).load(self.artifact, self.batch_size)

    def predict(self, context, model_input, params=None) -> np.ndarray | dict[str, np.ndarray]:
        """The model's output for ``model_input``; a model with several outputs answers them by name."""
        if isinstance(model_input, dict):  # several inputs, by name
            arrays = {s.name: np.asarray(model_input[s.name], dtype=s.dtype) for s in self.inputs}
        elif hasattr(model_input, "columns") and {s.name for s in self.inputs} <= set(model_input.columns):
            arrays = {s.name: np.stack(model_input[s.name].to_numpy()).astype(s.dtype) for s in self.inputs}
        else:
            spec = self.inputs[0]
            arrays = {spec.name: np.asarray(model_input, dtype=spec.dtype)}
        outputs = run_batched(self._predict, ArrayInputs(arrays), self.batch_size)
        return next(iter(outputs.values())) if len(outputs) == 1 else outputs


def _imported_modules(path: Path) -> set[str]:
    """Names of the ``tasks`` modules a source file imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name == "tasks" or name.startswith("tasks.")}


def _module_file(name: str) -> Path | None:
    base = PROJECT_ROOT / Path(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def serving_code(dest: Path) -> Path:
    """Copy into ``dest/tasks`` the modules this pyfunc needs at serving time: the import closure of this module
    and of every registered target (each package's ``__init__`` included); return ``dest/tasks``."""
    todo = [__name__, *targets.TARGET_MODULES.values()]
    files: set[Path] = set()
    while todo:
        name = todo.pop()
        path = _module_file(name)
        if path is None or path in files:
            continue
        files.add(path)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # parent packages
        todo += sorted(_imported_modules(path))
    for path in files:
        target = dest / path.relative_to(PROJECT_ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    return dest / "tasks"
