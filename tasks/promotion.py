"""The promote_model DAG's stages, JSON in and JSON out: which versions to promote, promote, smoke-test, serve.

Triggered by hand with a model and a version or alias (``champion`` by default), or on a schedule
with no model: then every champion that is promotable and not promoted yet. ``rollback_to`` points
serving back to an earlier committed version instead. A refused version (rejected in review, or
gate-failed) stops the run with the reason; nothing is written for it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from tasks import registry
from tasks import settings as settings_module
from tasks.faults import names_unreachable
from tasks.pipeline import progress
from tasks.promote import PromotionError, committed_manifest, point_serving
from tasks.promote import promote as promote_candidate
from tasks.records import Promotion


@names_unreachable
def requests(params: dict) -> list[dict]:
    settings = settings_module.load()
    model = (params.get("model_name") or "").strip()
    if params.get("rollback_to"):
        if not model:
            raise PromotionError("rollback_to needs model_name: which model's serving pointer to move back")
        committed_manifest(settings, model, int(params["rollback_to"]))  # refuses a version that is not committed
        progress("find", f"roll {model} back to serving version {params['rollback_to']}")
        return [{"model": model, "rollback_to": int(params["rollback_to"])}]
    if model:
        version = registry.resolve(settings, model, str(params.get("version") or registry.CHAMPION_ALIAS))
        why = registry.refusal(version)
        if why:
            raise PromotionError(f"{why}; it is never promoted")
        found = [(model, str(version.version))]
    else:
        found = registry.pending_champions(settings)
    progress("find", f"to promote: {', '.join(f'{m} version {v}' for m, v in found) or 'nothing'}")
    return [{"model": m, "registry_version": v} for m, v in found]


def request_name(request: dict) -> str:
    if "rollback_to" in request:
        return f"{request['model']}-rollback-{request['rollback_to']}"
    return f"{request['model']}-v{request['registry_version']}"


@names_unreachable
def promote(request: dict) -> dict:
    settings = settings_module.load()
    if "rollback_to" in request:  # nothing to copy: the version is already committed
        return {**request, "version": request["rollback_to"]}
    version = registry.resolve(settings, request["model"], request["registry_version"])
    why = registry.refusal(version)  # again: a reviewer may have rejected it since the run started
    if why:
        raise PromotionError(f"{why}; it is never promoted")
    with tempfile.TemporaryDirectory(prefix="promote-", dir=settings.home) as tmp:
        promotion = promote_candidate(settings, registry.fetch(settings, version, Path(tmp)))
    state = "already committed" if promotion.already_promoted else "committed"
    progress("promote", f"{request['model']} registry version {request['registry_version']}: {state} {promotion.uri}")
    return {**request, "version": promotion.version, "run_id": version.run_id, "promotion": promotion.to_json()}


@names_unreachable
def smoke(promoted: dict) -> dict:
    from tasks.smoke import smoke_test

    settings = settings_module.load()
    run_id = (
        promoted.get("run_id")
        or committed_manifest(settings, promoted["model"], promoted["version"])["mlflow"]["run_id"]
    )
    with tempfile.TemporaryDirectory(prefix="smoke-samples-", dir=settings.home) as tmp:
        samples = registry.smoke_samples(settings, run_id, Path(tmp))
        result = smoke_test(settings, promoted["model"], promoted["version"], samples)
    progress(
        "smoke",
        f"{promoted['model']} version {promoted['version']} from S3: {result.files_verified} files verified, "
        f"{result.samples} samples, max abs diff {result.max_abs_diff:.2g}, top-5 agreement {result.top5_agreement}",
    )
    return {**promoted, "smoke": result.to_json()}


@names_unreachable
def serve(smoked: dict) -> dict:
    settings = settings_module.load()
    serving = point_serving(settings, smoked["model"], smoked["version"])
    if "promotion" in smoked:
        promotion = Promotion.model_validate(smoked["promotion"])
        registry.mark_promoted(settings, smoked["model"], smoked["registry_version"], promotion, serving)
    progress(
        "serve", f"{serving['pointer_uri']} now serves version {smoked['version']}; Kubernetes: {serving['k8s_uri']}"
    )
    return {**smoked, "serving": serving}
