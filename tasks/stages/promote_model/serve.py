"""Task ``serve`` (mapped): the runtime's pointer moved to the smoke-tested version, Kubernetes objects beside it."""

from __future__ import annotations

from tasks.core import settings as settings_module
from tasks.core.faults import names_unreachable
from tasks.core.results import Promotion
from tasks.serving import review
from tasks.serving.pointer import point_serving
from tasks.serving.store import committed_manifest
from tasks.stages.runner import progress, says_failure


@says_failure("serve")
@names_unreachable
def run(smoked: dict) -> dict:
    settings = settings_module.load()
    serving = point_serving(settings, smoked["model"], smoked["version"], rollback="rollback_to" in smoked)
    if "promotion" in smoked:
        promotion = Promotion.model_validate(smoked["promotion"])
        review.mark_promoted(settings, smoked["model"], smoked["registry_version"], promotion, serving)
    if serving["moved"]:  # the registry says what serves, after a rollback too
        served = committed_manifest(settings, smoked["model"], serving["served_version"])
        review.record_serving(settings, smoked["model"], served, rollback="rollback_to" in smoked)
    if serving["moved"]:
        said = f"{serving['pointer_uri']} now serves version {smoked['version']}"
    else:  # a promotion of a later version finished first; serving never moves backwards
        said = f"version {smoked['version']} is committed; {serving['pointer_uri']} stays on newer version {serving['served_version']}"
    progress("serve", f"{said}; Kubernetes: {serving['k8s_uri']}")
    return {**smoked, "serving": serving}
