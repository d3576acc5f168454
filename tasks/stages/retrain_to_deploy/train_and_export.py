"""Task ``train_and_export`` of ``retrain_to_deploy``: train, save a SavedModel, and describe it for the Asset event.

The built-in trainer is the Keras digits classifier (tasks.models.keras_digits); a team's own
trainer is named as ``module:function``, called with an output directory, and returns the
SavedModel directory it wrote. What the event carries (model URI, framework, sha256, input
specs and the compile params to use) is all ``compile_pipeline`` needs to start.
"""

from __future__ import annotations

import importlib
import shutil
from pathlib import Path

from tasks.core import settings as settings_module
from tasks.core import store
from tasks.core.files import tree_sha256
from tasks.core.params import PipelineParams, check_event_params
from tasks.core.records import safe_run_id
from tasks.models.keras_digits import train_and_save
from tasks.sources.tensorflow import _load_signature, signature_specs
from tasks.stages.runner import says_failure

BUILTIN_TRAINER = "builtin:keras_digits"


def _trainer(name: str, trusted: bool = False):
    if name == BUILTIN_TRAINER:
        return lambda out_dir: train_and_save(out_dir)[0]
    module, _, function = name.partition(":")
    if not module or not function:
        raise ValueError(f"training callable {name!r} must read module:function or {BUILTIN_TRAINER}")
    why_not = settings_module.code_refusal(module, trusted, f"training callable {name}", "trust_training_code")
    if why_not:
        raise ValueError(why_not)
    try:
        return getattr(importlib.import_module(module), function)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"training callable {name!r} cannot be imported: {exc}") from exc


@says_failure("train_and_export")
def run(params: dict, run_id: str) -> dict:
    """Train on this host, put the SavedModel in the run store (``<RUN_STORE_URI>/trained/<model>/<run>/``), where
    compile_pipeline's export reads it on whichever host it runs; return the model_exported event's extra."""

    settings = settings_module.load()
    model_name = params["model_name"]
    # refused here, before training, not in the compile run the event starts
    compile_params = check_event_params(dict(params.get("compile_params") or {}))
    PipelineParams.model_validate(compile_params)
    out_dir = settings.scratch_dir / "trained" / model_name / safe_run_id(run_id)
    shutil.rmtree(out_dir, ignore_errors=True)  # a retried run trains again from nothing
    trainer = _trainer(params.get("training_callable") or BUILTIN_TRAINER, bool(params.get("trust_training_code")))
    saved_model = Path(trainer(out_dir / "saved_model"))
    if not (saved_model / "saved_model.pb").is_file():
        raise ValueError(f"the trainer returned {saved_model}, which is not a SavedModel directory")
    _, signature = _load_signature(saved_model)
    inputs, _ = signature_specs(signature)
    sha256 = tree_sha256(saved_model)
    where = store.join(settings.run_store_uri, "trained", model_name, safe_run_id(run_id), "saved_model")
    published = store.put_tree(saved_model, where)
    shutil.rmtree(out_dir, ignore_errors=True)
    return {
        "model_name": model_name,
        "model_uri": published.uri,
        "framework": "tensorflow",
        "sha256": sha256,
        "inputs": [spec.to_json() for spec in inputs],
        "compile_params": compile_params,
    }
