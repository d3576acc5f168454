"""Task ``find``: the registry versions to promote (or the serving version to roll back to)."""

from __future__ import annotations

from tasks import targets
from tasks.core import settings as settings_module
from tasks.core.faults import names_unreachable
from tasks.core.mlflow_client import CHAMPION_ALIAS, client
from tasks.serving import review
from tasks.serving.store import PromotionError, committed_manifest
from tasks.stages.runner import progress, says_failure


@says_failure("find")
@names_unreachable
def run(params: dict) -> list[dict]:
    settings = settings_module.load()
    model = (params.get("model_name") or "").strip()
    if params.get("rollback_to"):
        if not model:
            raise PromotionError("rollback_to needs model_name: which model's serving pointer to move back")
        # refuses a version that is not committed
        manifest = committed_manifest(settings, model, int(params["rollback_to"]))
        progress("find", f"roll {model} back to serving version {params['rollback_to']}")
        host_class = targets.get(manifest["target"]).run_queue
        return [{"model": model, "rollback_to": int(params["rollback_to"]), "host_class": host_class}]
    if model:
        approval = review.approved(settings, model, str(params.get("version") or CHAMPION_ALIAS))
        why = review.refusal(approval)
        if why:
            raise PromotionError(f"{why}; it is never promoted")
        found = [(model, str(approval.source.version))]
        progress("find", f"approval of {model} version {approval.source.version}: {approval.control}")
    else:
        found = review.pending_champions(settings)
    progress("find", f"to promote: {', '.join(f'{m} version {v}' for m, v in found) or 'nothing'}")
    registry = client(settings)
    return [
        # the smoke test runs on the host class the version's target runs on (its Neuron device, its GPU)
        {
            "model": m,
            "registry_version": v,
            "host_class": targets.get(registry.get_model_version(m, v).tags["target"]).run_queue,
        }
        for m, v in found
    ]
