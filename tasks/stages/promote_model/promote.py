"""Task ``promote`` (mapped): a registry version staged, verified and committed on S3 as serving version N."""

from __future__ import annotations

import tempfile
from pathlib import Path

from tasks.core import settings as settings_module
from tasks.core.faults import names_unreachable
from tasks.serving import review
from tasks.serving.commit import promote as promote_candidate
from tasks.serving.store import PromotionError
from tasks.stages.runner import progress, says_failure


@says_failure("promote")
@names_unreachable
def run(request: dict) -> dict:
    settings = settings_module.load()
    if "rollback_to" in request:  # nothing to copy: the version is already committed
        return {**request, "version": request["rollback_to"]}
    # again, just before the commit: a reviewer may have rejected it, or the approval's control changed
    approval = review.approved(settings, request["model"], request["registry_version"])
    why = review.refusal(approval)
    if why:
        raise PromotionError(f"{why}; it is never promoted")
    version = approval.source
    with tempfile.TemporaryDirectory(prefix="promote-", dir=settings.home) as tmp:
        promotion = promote_candidate(settings, review.fetch(settings, approval, Path(tmp)))
    state = "already committed" if promotion.already_promoted else "committed"
    progress("promote", f"{request['model']} registry version {request['registry_version']}: {state} {promotion.uri}")
    return {**request, "version": promotion.version, "run_id": version.run_id, "promotion": promotion.to_json(),
            "approval": approval.control}  # fmt: skip
