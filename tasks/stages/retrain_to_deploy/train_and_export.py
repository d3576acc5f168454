"""Task ``train_and_export`` of ``retrain_to_deploy``: train, save a SavedModel, and describe it for the Asset event.

The built-in trainer is the Keras digits classifier (tasks.models.keras_digits); a team's own
trainer is named as ``module:function``, called with an output directory, and returns the
SavedModel directory it wrote. What the event carries (model URI, framework, sha256, input
specs and the compile params to use) is all ``compile_pipeline`` needs to start.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

from tasks.core import settings as settings_module
from tasks.core.files import to_uri, tree_sha256
from tasks.core.records import PipelineParams
from tasks.models.keras_digits import train_and_save
from tasks.sources.tensorflow import _load_signature, signature_specs

BUILTIN_TRAINER = "builtin:keras_digits"


def _trainer(name: str):
    if name == BUILTIN_TRAINER:
        return lambda out_dir: train_and_save(out_dir)[0]
    module, _, function = name.partition(":")
    if not module or not function:
        raise ValueError(f"training callable {name!r} must read module:function or {BUILTIN_TRAINER}")
    try:
        return getattr(importlib.import_module(module), function)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"training callable {name!r} cannot be imported: {exc}") from exc


def run(params: dict, run_id: str) -> dict:
    """Train into ``<home>/trained/<model>/<run>/saved_model``; return the model_exported event's extra."""

    model_name = params["model_name"]
    out_dir = settings_module.load().home / "trained" / model_name / re.sub(r"[^A-Za-z0-9._-]", "_", run_id)
    saved_model = Path(_trainer(params.get("training_callable") or BUILTIN_TRAINER)(out_dir / "saved_model"))
    if not (saved_model / "saved_model.pb").is_file():
        raise ValueError(f"the trainer returned {saved_model}, which is not a SavedModel directory")
    _, signature = _load_signature(saved_model)
    inputs, _ = signature_specs(signature)
    compile_params = dict(params.get("compile_params") or {})
    PipelineParams.model_validate(compile_params)  # refused here, not after training, in the compile run
    return {
        "model_name": model_name,
        "model_uri": to_uri(saved_model),
        "framework": "tensorflow",
        "sha256": tree_sha256(saved_model),
        "inputs": [spec.to_json() for spec in inputs],
        "compile_params": compile_params,
    }
