"""The registered model: an MLflow pyfunc that runs the compiled artifact with its own runtime.

``mlflow models serve -m models:/<name>@champion`` loads this class; the project's
``tasks`` package travels inside the model (``code_paths``), so nothing else is needed.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow.pyfunc
import numpy as np

from tasks import targets
from tasks.records import CompiledArtifact, TensorSpec

SERVING_BATCH = 8


class CompiledModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from tasks.files import to_uri

        record = json.loads(Path(context.artifacts["artifact_record"]).read_text())
        self.inputs = [TensorSpec.model_validate(spec) for spec in record.pop("inputs")]
        record.pop("outputs", None)
        recorded = CompiledArtifact.model_validate(record)
        # The artifact now lives where MLflow downloaded it, not where it was compiled.
        self.artifact = recorded.model_copy(update={"uri": to_uri(context.artifacts["compiled"])})
        self.batch_size = self.artifact.config.batch_size or SERVING_BATCH
        self._predict = targets.get(self.artifact.config.target).load(self.artifact, self.batch_size)

    def predict(self, context, model_input, params=None) -> np.ndarray:
        from tasks.validate import ArrayInputs, run_batched

        if isinstance(model_input, dict):  # several inputs, by name
            arrays = {s.name: np.asarray(model_input[s.name], dtype=s.dtype) for s in self.inputs}
        elif hasattr(model_input, "columns") and {s.name for s in self.inputs} <= set(model_input.columns):
            arrays = {s.name: np.stack(model_input[s.name].to_numpy()).astype(s.dtype) for s in self.inputs}
        else:
            spec = self.inputs[0]
            arrays = {spec.name: np.asarray(model_input, dtype=spec.dtype)}
        return run_batched(self._predict, ArrayInputs(arrays), self.batch_size)
