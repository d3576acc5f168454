"""Smoke test of a promoted version: what serving will read, read back from S3 and run.

The committed files are downloaded into a fresh directory and checked against the manifest, put
back in the compiled artifact's own layout, loaded with their runtime, and run on the validation
samples recorded at registration; the outputs must match the ones recorded at validation time.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from tasks import targets
from tasks.core.batching import ArrayInputs, match_outputs, run_batched
from tasks.core.figures import said
from tasks.core.files import sha256_file, to_uri
from tasks.core.records import CompileConfig, CompiledArtifact
from tasks.core.settings import Settings
from tasks.core.store import artifact_dir
from tasks.serving.records import SmokeResult
from tasks.serving.store import PromotionError, Store
from tasks.validation.metrics import differs, served_as_validated

SMOKE_BATCH = 8
# The same runtime on the same files: only batch-size-dependent kernels may differ.
SMOKE_ATOL, SMOKE_RTOL = 1e-3, 1e-3


def download_version(settings: Settings, model: str, number: int, dest: Path) -> CompiledArtifact:
    """The committed files of ``<model>/<number>/``, verified, as a compiled artifact in ``dest``."""
    store = Store(settings, model)
    manifest = store.manifest(number)
    for entry in manifest["files"]:
        path = dest / entry["artifact_path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        store.client.download_file(store.bucket, f"{store.root}{number}/{entry['path']}", str(path))
        if sha256_file(path) != entry["sha256"] or path.stat().st_size != entry["size"]:
            raise PromotionError(f"{model} version {number}: {entry['path']} does not match the manifest")
    return CompiledArtifact(
        config=CompileConfig(
            target=manifest["target"], precision=manifest["precision"], batch_size=manifest["batch_size"]
        ),
        status="ok",
        uri=to_uri(dest),
        sha256=manifest["artifact_sha256"],
        files=[entry["artifact_path"] for entry in manifest["files"]],
    )


def smoke_test(
    settings: Settings, model: str, number: int, samples_path: Path, registered_sha256: str = ""
) -> SmokeResult:
    """The committed version read back from S3, checked against ``registered_sha256`` (the registry's record of the
    compiled files, not the manifest beside them), loaded with its runtime and run on the validation samples."""
    samples = np.load(samples_path)
    inputs = {name.removeprefix("input:"): samples[name] for name in samples.files if name.startswith("input:")}
    recorded = {name.removeprefix("output:"): samples[name] for name in samples.files if name.startswith("output:")}
    with tempfile.TemporaryDirectory(prefix="smoke-") as tmp:
        artifact = download_version(settings, model, number, Path(tmp))
        artifact_dir(artifact)  # the files as a whole are what the manifest says
        if registered_sha256 and artifact.sha256 != registered_sha256:
            raise PromotionError(
                f"{model} version {number} on S3 is not what was registered (sha256 {artifact.sha256[:16]}..., the "
                f"registry's tag artifact_sha256 {registered_sha256[:16]}...)"
            )
        target = targets.get(artifact.config.target)
        available, why = target.available()
        if not available:
            raise PromotionError(f"cannot smoke-test {model} version {number} on this worker: {why}")
        batch_size = artifact.config.batch_size or SMOKE_BATCH
        outputs = run_batched(target.load(artifact, batch_size), ArrayInputs(inputs), batch_size)
    try:
        outputs = match_outputs(outputs, list(recorded), f"{model} version {number}")
    except ValueError as exc:
        raise PromotionError(str(exc)) from exc
    checks = []
    for name, expected in recorded.items():
        got = outputs[name]
        if got.shape != expected.shape:
            raise PromotionError(
                f"{model} version {number} output {name!r} is shaped {got.shape}, validation recorded {expected.shape}"
            )
        check = served_as_validated(name, got, expected, SMOKE_ATOL, SMOKE_RTOL)
        if differs(check):
            raise PromotionError(
                f"{model} version {number} from S3 predicts differently from validation on output {name!r}: "
                f"{said(check)} (tolerance atol {SMOKE_ATOL}, rtol {SMOKE_RTOL})"
            )
        checks.append(check)
    return SmokeResult(
        model=model,
        version=number,
        samples=len(next(iter(recorded.values()))),
        files_verified=len(artifact.files),
        outputs=checks,
    )
