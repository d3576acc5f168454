"""Task ``find``: the registry versions to promote (or the serving version to roll back to)."""

from __future__ import annotations

from tasks import targets
from tasks.core import settings as settings_module
from tasks.core.params import PromoteParams
from tasks.registry.client import client
from tasks.registry.review import approved, pending_champions, refusal
from tasks.serving.records import PromoteRequest
from tasks.serving.store import PromotionError, committed_manifest
from tasks.stages.runner import progress, stage


@stage("find")
def run(params: PromoteParams) -> list[PromoteRequest]:
    settings = settings_module.load()
    model = params.model_name.strip()
    if params.rollback_to is not None:
        if not model:
            raise PromotionError("rollback_to needs model_name: which model's serving pointer to move back")
        # refuses a version that is not committed
        manifest = committed_manifest(settings, model, params.rollback_to)
        progress("find", f"roll {model} back to serving version {params.rollback_to}")
        host_class = targets.get(manifest["target"]).run_queue
        return [PromoteRequest(model=model, rollback_to=params.rollback_to, host_class=host_class)]
    if model:
        approval = approved(settings, model, params.version)
        why = refusal(approval)
        if why:
            raise PromotionError(f"{why}; it is never promoted")
        found = [(model, str(approval.source.version))]
        progress("find", f"approval of {model} version {approval.source.version}: {approval.control}")
    else:
        found = pending_champions(settings)
    progress("find", f"to promote: {', '.join(f'{m} version {v}' for m, v in found) or 'nothing'}")
    registry = client(settings)
    return [
        # the smoke test runs on the host class the version's target runs on (its Neuron device, its GPU)
        PromoteRequest(
            model=m,
            registry_version=v,
            host_class=targets.get(registry.get_model_version(m, v).tags["target"]).run_queue,
        )
        for m, v in found
    ]
