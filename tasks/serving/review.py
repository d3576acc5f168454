"""Registry review: which version a reviewer approved, whether it may be promoted, and what promotion needs.

A reviewer approves a version by moving alias ``champion`` to it (MLflow UI or API) and rejects one
with tag ``review=rejected``. A rejected version, or one whose gate did not pass, is never promoted,
whatever the trigger asks for.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from tasks.core.files import to_uri, tree_sha256
from tasks.core.mlflow_client import CHAMPION_ALIAS, client
from tasks.core.records import CompiledArtifact, Promotion, TensorSpec
from tasks.core.settings import Settings
from tasks.serving.store import Candidate, PromotionError

# Heavy, so imported inside the functions that need them (DAG parsing and most tasks never do): mlflow.

REVIEW_TAG, REJECTED = "review", "rejected"
PROMOTED_TAG = "promoted_uri"  # set on a registry version once it is committed and serving points at it
SMOKE_SAMPLES = "smoke/samples.npz"  # logged at registration: inputs and the compiled outputs at validation


def resolve(settings: Settings, model: str, version_or_alias: str):
    """The registry version named by a number or an alias; the error names what is missing."""
    from mlflow.exceptions import MlflowException

    registry = client(settings)
    try:
        if version_or_alias.isdigit():
            return registry.get_model_version(model, version_or_alias)
        return registry.get_model_version_by_alias(model, version_or_alias)
    except MlflowException as exc:
        if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise  # e.g. the server is unreachable: not a statement about the model
        raise PromotionError(f"registered model {model!r} has no version or alias {version_or_alias!r}") from exc


def refusal(version) -> str:
    """Why this version may not be promoted, or ""."""
    if version.tags.get(REVIEW_TAG) == REJECTED:
        return f"version {version.version} of {version.name} was rejected in review (tag {REVIEW_TAG}={REJECTED})"
    if version.tags.get("validation") != "pass":
        return f"version {version.version} of {version.name} did not pass the validation gate"
    return ""


REGISTRY_PAGE = 100  # MLflow's own default page of registered models


def registered_models(registry, page_size: int = REGISTRY_PAGE) -> list:
    """Every registered model, page after page (one call stops at a page: MLflow's default is 100 models)."""
    found, token = [], None
    while True:
        page = registry.search_registered_models(max_results=page_size, page_token=token)
        found += list(page)
        token = page.token
        if not token:
            return found


def pending_champions(settings: Settings, page_size: int = REGISTRY_PAGE) -> list[tuple[str, str]]:
    """(model, version) of every champion that is promotable and not promoted yet: what the schedule picks up."""
    registry = client(settings)
    pending = []
    for model in registered_models(registry, page_size):
        number = (model.aliases or {}).get(CHAMPION_ALIAS)
        if number is None:
            continue
        version = registry.get_model_version(model.name, str(number))
        if not refusal(version) and PROMOTED_TAG not in version.tags:
            pending.append((model.name, str(version.version)))
    return pending


def fetch(settings: Settings, version, dest: Path) -> Candidate:
    """Download the registered model's compiled files and check them against the sha256 recorded at compile time."""
    import mlflow

    client(settings)
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{version.name}/{version.version}", dst_path=str(dest)))
    # where the pyfunc keeps its artifacts, as its MLmodel file says
    paths = mlflow.models.Model.load(str(local / "MLmodel")).flavors["python_function"]["artifacts"]
    record = json.loads((local / paths["artifact_record"]["path"]).read_text())
    inputs = [TensorSpec.model_validate(s) for s in record.pop("inputs")]
    outputs = [TensorSpec.model_validate(s) for s in record.pop("outputs", [])]
    compiled = local / paths["compiled"]["path"]
    artifact = CompiledArtifact.model_validate(record).model_copy(update={"uri": to_uri(compiled)})
    # Checked against the registry's record, written at registration, not against a file that travels with the
    # artifact (whoever could change the files could change that file too).
    registered = registered_sha256(version)
    found = tree_sha256(compiled) if compiled.is_dir() else "missing"
    if artifact.status != "ok" or found != registered or artifact.sha256 != registered:
        raise PromotionError(
            f"version {version.version} of {version.name}: its compiled files are not what was registered (sha256 "
            f"{found[:16]}..., the registry's tag artifact_sha256 {registered[:16]}...); it is never promoted"
        )
    return Candidate(
        model=version.name,
        registry_version=str(version.version),
        run_id=version.run_id,
        artifact=artifact,
        inputs=inputs,
        outputs=outputs,
        source_sha256=version.tags.get("source_sha256", ""),
        runtime_settings=json.loads(version.tags.get("runtime_settings") or "{}"),
    )


def registered_sha256(version) -> str:
    """The sha256 of a version's compiled files as the registry recorded it at registration (tag artifact_sha256)."""
    recorded = (version.tags or {}).get("artifact_sha256", "")
    if len(recorded) != 64:
        raise PromotionError(
            f"version {version.version} of {version.name} has no artifact_sha256 tag (written at registration): "
            "its files cannot be checked, so it is never promoted"
        )
    return recorded


def smoke_samples(settings: Settings, run_id: str, dest: Path) -> Path:
    import mlflow

    client(settings)
    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=SMOKE_SAMPLES, dst_path=str(dest)))


SERVING_ALIAS = "serving"  # the registry version whose serving version the runtime's pointer names


def record_serving(settings: Settings, model: str, served: dict, rollback: bool) -> None:
    """Make the registry say what serves, whenever the pointer moved (a promotion or a rollback): alias ``serving``
    and the model's tags ``serving_version`` / ``serving_registry_version`` name it; a rollback says so on the
    version it moved back to. ``served``: the committed manifest of the serving version now pointed at."""
    from mlflow.exceptions import MlflowException

    registry = client(settings)
    registry_version, number = str(served["mlflow"]["version"]), str(served["version"])
    try:
        registry.get_model_version(model, registry_version)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        return  # a version the registry never held (or has deleted): there is nothing there to agree with serving
    registry.set_registered_model_alias(model, SERVING_ALIAS, registry_version)
    registry.set_registered_model_tag(model, "serving_version", number)
    registry.set_registered_model_tag(model, "serving_registry_version", registry_version)
    if rollback:
        when = datetime.now(UTC).isoformat(timespec="seconds")
        registry.set_model_version_tag(model, registry_version, "rolled_back_to", f"serving version {number} at {when}")
        registry.set_registered_model_tag(model, "last_rollback", f"to serving version {number} at {when}")


def mark_promoted(settings: Settings, model: str, version: str, promotion: Promotion, serving: dict) -> None:
    registry = client(settings)
    registry.set_model_version_tag(model, version, "promoted_version", str(promotion.version))
    registry.set_model_version_tag(model, version, "serving_pointer", serving["pointer_uri"])
    registry.set_model_version_tag(model, version, PROMOTED_TAG, promotion.uri)
