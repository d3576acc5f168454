"""Task ``promote`` (mapped): a registry version staged, verified and committed on S3 as serving version N."""

from __future__ import annotations

import tempfile
from pathlib import Path

from tasks.core import settings as settings_module
from tasks.registry.promotion import fetch
from tasks.registry.review import approved, refusal
from tasks.serving.commit import promote as promote_candidate
from tasks.serving.records import Promoted, PromoteRequest
from tasks.serving.store import PromotionError
from tasks.stages.runner import progress, stage


@stage("promote")
def run(request: PromoteRequest) -> Promoted:
    settings = settings_module.load()
    if request.rollback_to is not None:  # nothing to copy: the version is already committed
        return Promoted(**dict(request), version=request.rollback_to)
    # again, just before the commit: a reviewer may have rejected it, or the approval's control changed
    approval = approved(settings, request.model, request.registry_version)
    why = refusal(approval)
    if why:
        raise PromotionError(f"{why}; it is never promoted")
    with tempfile.TemporaryDirectory(prefix="promote-", dir=settings.home) as tmp:
        promotion = promote_candidate(settings, fetch(settings, approval, Path(tmp)))
    state = "already committed" if promotion.already_promoted else "committed"
    progress("promote", f"{request.model} registry version {request.registry_version}: {state} {promotion.uri}")
    return Promoted(**dict(request), version=promotion.version, run_id=approval.source.run_id, promotion=promotion,
                    approval=approval.control)  # fmt: skip
