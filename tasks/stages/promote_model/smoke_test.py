"""Task ``smoke_test`` (mapped): the committed version read back from S3, loaded and run on the validation samples."""

from __future__ import annotations

import tempfile
from pathlib import Path

from tasks.core import settings as settings_module
from tasks.core.faults import names_unreachable
from tasks.serving import review
from tasks.serving.smoke import smoke_test
from tasks.serving.store import committed_manifest
from tasks.stages.runner import progress, says_failure


@says_failure("smoke_test")
@names_unreachable
def run(promoted: dict) -> dict:
    settings = settings_module.load()
    manifest = committed_manifest(settings, promoted["model"], promoted["version"])
    run_id = promoted.get("run_id") or manifest["mlflow"]["run_id"]
    # checked against the approved copy's sha256: the registry's record the pipeline cannot rewrite
    approval = review.approved(settings, promoted["model"], str(manifest["mlflow"]["version"]))
    with tempfile.TemporaryDirectory(prefix="smoke-samples-", dir=settings.home) as tmp:
        samples = review.smoke_samples(settings, run_id, Path(tmp))
        result = smoke_test(
            settings, promoted["model"], promoted["version"], samples, review.registered_sha256(approval.copy)
        )
    progress(
        "smoke",
        f"{promoted['model']} version {promoted['version']} from S3: {result.files_verified} files verified, "
        f"{result.samples} samples, max abs diff {result.max_abs_diff:.2g}, top-5 agreement {result.top5_agreement}",
    )
    return {**promoted, "smoke": result.to_json()}
