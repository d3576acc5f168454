"""What promotion reads from the registry and writes back to it: the approved version's files, checked against the
sha256 its approved copy carries; the samples its smoke test runs; and, once serving points at a version, the
tags and alias that say so (:mod:`tasks.registry.review` says which version may be promoted)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from tasks.core.files import to_uri, tree_sha256
from tasks.core.outcomes import Promotion
from tasks.core.records import CompiledArtifact
from tasks.core.schema import TensorSpec
from tasks.core.settings import Settings
from tasks.registry.client import client
from tasks.registry.review import PROMOTED_TAG, Approval
from tasks.serving.commit import Candidate
from tasks.serving.store import PromotionError

# Heavy, so imported inside the functions that need them (DAG parsing and most tasks never do): mlflow.

SMOKE_SAMPLES = "smoke/samples.npz"  # logged at registration: inputs and the compiled outputs at validation


def fetch(settings: Settings, approval: Approval, dest: Path) -> Candidate:
    """Download the approved version's compiled files and check them against the sha256 its approved copy
    carries (recorded at registration, frozen by the reviewer's copy)."""
    import mlflow

    client(settings)
    version = approval.source
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
    registered = registered_sha256(approval.copy)
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
    """The sha256 of a version's compiled files as the registry recorded it at registration (tag artifact_sha256);
    for an approval, read from its copy."""
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


def mark_promoted(settings: Settings, model: str, version: str, promotion: Promotion, pointer_uri: str) -> None:
    """Tag the registry version with the serving version it was committed as, and the pointer that serves it; a
    version with tag ``promoted_uri`` is no longer pending (:func:`tasks.registry.review.pending_champions`)."""
    registry = client(settings)
    registry.set_model_version_tag(model, version, "promoted_version", str(promotion.version))
    registry.set_model_version_tag(model, version, "serving_pointer", pointer_uri)
    registry.set_model_version_tag(model, version, PROMOTED_TAG, promotion.uri)
