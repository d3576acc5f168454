"""Task ``serve`` (mapped): the runtime's pointer moved to the smoke-tested version, Kubernetes objects beside it."""

from __future__ import annotations

from tasks.core import settings as settings_module
from tasks.registry.promotion import mark_promoted, record_serving
from tasks.serving.pointer import point_serving
from tasks.serving.records import Served, SmokeTested
from tasks.serving.store import committed_manifest
from tasks.stages.runner import progress, stage


@stage("serve")
def run(smoked: SmokeTested) -> Served:
    settings = settings_module.load()
    serving = point_serving(settings, smoked.model, smoked.version, rollback=smoked.rollback)
    if smoked.promotion is not None:
        mark_promoted(settings, smoked.model, smoked.registry_version, smoked.promotion, serving.pointer_uri)
    if serving.moved:  # the registry says what serves, after a rollback too
        served = committed_manifest(settings, smoked.model, serving.served_version)
        record_serving(settings, smoked.model, served, rollback=smoked.rollback)
        said = f"{serving.pointer_uri} now serves version {smoked.version}"
    else:  # a promotion of a later version finished first; serving never moves backwards
        said = f"version {smoked.version} is committed; {serving.pointer_uri} stays on newer version {serving.served_version}"
    progress("serve", f"{said}; Kubernetes: {serving.k8s_uri}")
    return Served(**dict(smoked), serving=serving)
