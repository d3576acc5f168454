"""Task ``smoke_test`` (mapped): the committed version read back from S3, loaded and run on the validation samples."""

from __future__ import annotations

import tempfile
from pathlib import Path

from tasks.core import settings as settings_module
from tasks.registry.promotion import registered_sha256, smoke_samples
from tasks.registry.review import approved
from tasks.serving.records import Promoted, SmokeTested
from tasks.serving.smoke import smoke_test
from tasks.serving.store import committed_manifest
from tasks.stages.runner import progress, stage


@stage("smoke_test")
def run(promoted: Promoted) -> SmokeTested:
    settings = settings_module.load()
    manifest = committed_manifest(settings, promoted.model, promoted.version)
    run_id = promoted.run_id or manifest["mlflow"]["run_id"]
    # checked against the approved copy's sha256: the registry's record the pipeline cannot rewrite
    approval = approved(settings, promoted.model, str(manifest["mlflow"]["version"]))
    with tempfile.TemporaryDirectory(prefix="smoke-samples-", dir=settings.home) as tmp:
        samples = smoke_samples(settings, run_id, Path(tmp))
        result = smoke_test(settings, promoted.model, promoted.version, samples, registered_sha256(approval.copy))
    progress(
        "smoke",
        f"{promoted.model} version {promoted.version} from S3: {result.files_verified} files verified, "
        f"{result.samples} samples, as validated: {result.summary}",
    )
    return SmokeTested(**dict(promoted), smoke=result)
