"""Promote stage: put a registered version on S3 for serving, never half-written, never overwritten.

Keys under ``s3://<bucket>/<prefix>/<model>/``:

- ``.staging/<registry version>/``: the files as uploaded, each read back and checked against its sha256;
- ``.claims/<N>.json``: written only if absent (``IfNoneMatch="*"``), so two promotions can never take the
  same serving version N; then ``.claims/registry-<version>.json``, also only if absent, binds the registry
  version to its N: a retry, or a promotion of the same registry version racing this one, resumes that N;
- ``<N>/``: the files in the serving runtime's layout (tasks.serving.layout), copied from staging with the
  graph file last, then ``<N>/manifest.json``, written only if absent: the commit marker. A version
  without it is invisible to every reader (the smoke test, the pointer, rollback);
- the runtime's pointer (``models.config``, ``config.pbtxt`` or ``config.json``), moved by
  :func:`tasks.serving.pointer.point_serving` only to a committed version, and ``k8s/<N>.yaml``.

A promotion that stops anywhere leaves no committed version; running it again resumes. Promoting a
registry version that is already committed returns its manifest.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from tasks.core.files import local_path, sha256_chunks, sha256_file
from tasks.core.outcomes import Promotion
from tasks.core.records import CompiledArtifact
from tasks.core.schema import TensorSpec
from tasks.core.settings import Settings
from tasks.serving import layout as serving_layout
from tasks.serving.store import MANIFEST, PromotionError, Store

STAGING = ".staging"
CLAIMS = ".claims"


@dataclass(frozen=True)
class Candidate:
    """A registry version as promotion reads it: the compiled files (downloaded) and what describes them."""

    model: str
    registry_version: str
    run_id: str
    artifact: CompiledArtifact  # uri: a local directory holding the compiled files
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    source_sha256: str
    runtime_settings: dict[str, str] = field(default_factory=dict)  # what the benchmark's selected point ran with


def _sha256_of_object(store: Store, key: str) -> str:
    return sha256_chunks(
        store.client.get_object(Bucket=store.bucket, Key=store.root + key)["Body"].iter_chunks(1 << 20)
    )


def _stage(store: Store, candidate: Candidate, files: list[dict]) -> None:
    """Upload into staging (resuming: a file already there with the right sha256 is kept) and read each back."""
    root = local_path(candidate.artifact.uri)
    staging = f"{STAGING}/{candidate.registry_version}/"
    present = set(store.keys(staging))
    for entry in files:
        key = staging + entry["artifact_path"]
        if key in present and _sha256_of_object(store, key) == entry["sha256"]:
            continue
        store.client.upload_file(str(root / entry["artifact_path"]), store.bucket, store.root + key)
        stored = _sha256_of_object(store, key)
        if stored != entry["sha256"]:
            raise PromotionError(
                f"staged {entry['artifact_path']} reads back as sha256 {stored}, not {entry['sha256']}"
            )


def _claim(store: Store, candidate: Candidate) -> int:
    """The serving version number of this registry version: its earlier one, or a new one no other promotion holds.

    Two writes, each only if absent: ``.claims/<N>.json`` makes N this promotion's alone, then
    ``.claims/registry-<version>.json`` binds the registry version to N. Of two promotions of the same
    registry version racing, the second bind fails and that one takes the first one's N (dropping its own).
    """
    bound_key = f"{CLAIMS}/registry-{candidate.registry_version}.json"
    body = {"registry_version": candidate.registry_version, "sha256": candidate.artifact.sha256, "pid": os.getpid()}
    bound = store.read_json(bound_key)
    if bound is None:
        numbers = [int(Path(k).stem) for k in store.keys(f"{CLAIMS}/") if Path(k).stem.isdigit()]
        number = max([0, *numbers, *store.version_numbers()]) + 1
        while not store.put_new(f"{CLAIMS}/{number}.json", json.dumps(body).encode()):
            number += 1  # another promotion took it first
        if store.put_new(bound_key, json.dumps({**body, "version": number}).encode()):
            return number
        store.delete([f"{CLAIMS}/{number}.json"])  # a promotion of the same registry version bound first
        bound = store.read_json(bound_key) or {}
    if bound.get("sha256") != candidate.artifact.sha256:
        raise PromotionError(
            f"registry version {candidate.registry_version} of {store.model} was claimed on S3 for another artifact "
            f"(sha256 {bound.get('sha256')}); a serving version is never reused"
        )
    return int(bound["version"])


def _copy_into_version(store: Store, staging: str, number: int, layout, files: list[dict]) -> None:
    """Copy staged files into ``<N>/`` in layout order, the graph file last, checking each copy's size."""
    by_artifact_path = {f["artifact_path"]: f for f in files}
    for artifact_path in serving_layout.upload_order(layout):
        entry = by_artifact_path[artifact_path]
        key = f"{number}/{entry['path']}"
        store.client.copy_object(
            Bucket=store.bucket,
            Key=store.root + key,
            CopySource={"Bucket": store.bucket, "Key": store.root + staging + artifact_path},
        )
        size = store.client.head_object(Bucket=store.bucket, Key=store.root + key)["ContentLength"]
        if size != entry["size"]:
            raise PromotionError(f"copy of {entry['path']} holds {size} of {entry['size']} bytes")


def _manifest(settings: Settings, candidate: Candidate, number: int, layout, files: list[dict]) -> dict:
    config = candidate.artifact.config
    return {
        "model": candidate.model,
        "version": number,
        "runtime": layout.runtime,
        "graph_file": layout.graph_file,
        "files": files,
        "artifact_sha256": candidate.artifact.sha256,
        "target": config.target,
        "precision": config.precision,
        "batch_size": config.batch_size,
        "compiler": f"{candidate.artifact.compiler} {candidate.artifact.compiler_version}".strip(),
        "inputs": [spec.to_json() for spec in candidate.inputs],
        "outputs": [spec.to_json() for spec in candidate.outputs],
        "source_sha256": candidate.source_sha256,
        "runtime_settings": candidate.runtime_settings,
        "mlflow": {
            "tracking_uri": settings.mlflow_tracking_uri,
            "run_id": candidate.run_id,
            "registered_model": candidate.model,
            "version": candidate.registry_version,
        },
        "promoted_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _promotion(store: Store, number: int, manifest: dict, already: bool = False) -> Promotion:
    return Promotion(
        uri=store.uri(f"{number}/"),
        endpoint_url=store.settings.s3_endpoint_url,
        manifest_uri=store.uri(f"{number}/{MANIFEST}"),
        manifest=manifest,
        version=number,
        already_promoted=already,
    )


def _committed_version(store: Store, candidate: Candidate) -> tuple[int, dict] | None:
    """The serving version already committed for this registry version, if any; never another artifact's."""
    for number, manifest in store.committed().items():
        if manifest.get("mlflow", {}).get("version") == candidate.registry_version:
            if manifest.get("artifact_sha256") != candidate.artifact.sha256:
                raise PromotionError(
                    f"{store.uri(f'{number}/')} holds registry version {candidate.registry_version} with another "
                    "artifact; a promoted version is never overwritten"
                )
            return number, manifest
    return None


def _already_committed(store: Store, candidate: Candidate) -> Promotion | None:
    """The committed copy of this registry version, after removing staged files a crash or a race left."""
    found = _committed_version(store, candidate)
    if found is None:
        return None
    store.delete(store.keys(f"{STAGING}/{candidate.registry_version}/"))
    return _promotion(store, *found, already=True)


def promote(settings: Settings, candidate: Candidate) -> Promotion:
    """Stage, verify, claim a version, copy (graph file last), commit; or return the committed copy."""
    store = Store(settings, candidate.model)
    already = _already_committed(store, candidate)
    if already:
        return already
    store.check_conditional_writes()  # the claims below rest on them

    root = local_path(candidate.artifact.uri)
    layout = serving_layout.layout_for(candidate.artifact.config.target, candidate.artifact.files)
    files = [
        {
            "path": layout.files[name],
            "artifact_path": name,
            "sha256": sha256_file(root / name),
            "size": (root / name).stat().st_size,
        }
        for name in candidate.artifact.files
    ]
    staging = f"{STAGING}/{candidate.registry_version}/"
    try:
        _stage(store, candidate, files)
        number = _claim(store, candidate)
        if store.read_json(f"{number}/{MANIFEST}") is None:  # else a racing promotion of it committed first
            _copy_into_version(store, staging, number, layout, files)
        manifest = _manifest(settings, candidate, number, layout, files)
        if store.put_new(f"{number}/{MANIFEST}", json.dumps(manifest, indent=2).encode()):
            store.delete(store.keys(staging))
            return _promotion(store, number, manifest)
    except Exception:
        # A racing promotion of the same registry version may have committed and removed the staged
        # files under this one; then its commit is the result. Anything else is this promotion's failure.
        already = _already_committed(store, candidate)
        if already is None:
            raise
        return already
    # The commit marker was there first: a racing promotion of this registry version committed it.
    already = _already_committed(store, candidate)
    if already is None:
        raise PromotionError(f"{store.uri(f'{number}/')} was committed by another promotion")
    return already
