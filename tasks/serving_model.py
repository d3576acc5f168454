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
from tasks.records import CompiledArtifact

SERVING_BATCH = 8


class CompiledModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from tasks.files import to_uri

        recorded = CompiledArtifact.model_validate(json.loads(Path(context.artifacts["artifact_record"]).read_text()))
        # The artifact now lives where MLflow downloaded it, not where it was compiled.
        self.artifact = recorded.model_copy(update={"uri": to_uri(context.artifacts["compiled"])})
        self.batch_size = self.artifact.config.batch_size or SERVING_BATCH
        self._predict = targets.get(self.artifact.config.target).load(self.artifact, self.batch_size)

    def predict(self, context, model_input, params=None) -> np.ndarray:
        from tasks.validate import run_batched

        batch = np.asarray(model_input, dtype=np.float32)
        return run_batched(self._predict, batch, self.batch_size)
