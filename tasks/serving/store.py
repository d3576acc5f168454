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
  :func:`point_serving` only to a committed version, and ``k8s/<N>.yaml``.

A promotion that stops anywhere leaves no committed version; running it again resumes. Promoting a
registry version that is already committed returns its manifest.
"""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from tasks.core.files import local_path, sha256_chunks, sha256_file
from tasks.core.records import CompiledArtifact, Promotion, TensorSpec, check_safe_name
from tasks.core.settings import Settings
from tasks.core.storage import error_code, region, s3_client
from tasks.serving import kubernetes
from tasks.serving import layout as serving_layout

# Heavy, so imported inside the functions that need them (DAG parsing and most tasks never do): botocore.

MANIFEST = "manifest.json"
STAGING = ".staging"
CLAIMS = ".claims"
K8S_DIR = "k8s"


class PromotionError(RuntimeError):
    pass


PROBES = ".probes"  # under the model's prefix: a probe's key, deleted as soon as it has answered
_HONOURS_CONDITIONS: set[tuple] = set()  # (endpoint, bucket) pairs whose conditional writes were probed


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


class Store:
    """The serving bucket's keys of one model."""

    def __init__(self, settings: Settings, model: str):
        from botocore.exceptions import ClientError

        try:
            check_safe_name(model, "model name")
            for part in settings.serving_prefix.split("/") if settings.serving_prefix else []:
                check_safe_name(part, "SERVING_PREFIX segment")
        except ValueError as exc:
            raise PromotionError(str(exc)) from None
        self.settings, self.model = settings, model
        self.client = s3_client(settings)
        self.bucket = settings.serving_bucket
        self.root = "/".join(filter(None, [settings.serving_prefix, model])) + "/"
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            where = settings.s3_endpoint_url or "AWS S3"
            raise PromotionError(
                f"bucket {self.bucket!r} is not reachable at {where}: {error_code(exc) or exc}"
            ) from exc

    def uri(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{self.root}{key}"

    def read_json(self, key: str) -> dict | None:
        from botocore.exceptions import ClientError

        try:
            return json.loads(self.client.get_object(Bucket=self.bucket, Key=self.root + key)["Body"].read())
        except ClientError as exc:
            if error_code(exc) in ("NoSuchKey", "404"):
                return None
            raise

    def put_new(self, key: str, body: bytes, content_type: str = "application/json") -> bool:
        """Write ``key`` only if it does not exist; False where it already did."""
        from botocore.exceptions import ClientError

        try:
            self.client.put_object(
                Bucket=self.bucket, Key=self.root + key, Body=body, ContentType=content_type, IfNoneMatch="*"
            )
        except ClientError as exc:
            if error_code(exc) in ("PreconditionFailed", "ConditionalRequestConflict"):
                return False
            raise
        return True

    def check_conditional_writes(self) -> None:
        """Refuse a store that ignores conditional writes: claims and the serving pointer's compare-and-swap rest on
        them, and without them two promotions would both take a version and the pointer would be last-writer-wins.
        Probed once per process and bucket: a second ``If-None-Match: *`` put of one key must fail, and so must an
        ``If-Match`` on an ETag the key does not have."""
        probed = (self.settings.s3_endpoint_url, self.bucket)
        if probed in _HONOURS_CONDITIONS:
            return
        from botocore.exceptions import ClientError

        key = f"{PROBES}/conditional-{os.getpid()}-{random.getrandbits(48):012x}"
        ignored = []
        try:
            if not self.put_new(key, b"first") or self.put_new(key, b"second"):
                ignored.append("If-None-Match")
            try:
                self.client.put_object(Bucket=self.bucket, Key=self.root + key, Body=b"third", IfMatch='"0"')
                ignored.append("If-Match")
            except ClientError as exc:
                if error_code(exc) not in ("PreconditionFailed", "ConditionalRequestConflict"):
                    raise
        finally:
            self.delete([key])
        if ignored:
            where = self.settings.s3_endpoint_url or "AWS S3"
            raise PromotionError(
                f"the S3 store at {where} (bucket {self.bucket!r}) ignores conditional writes ({', '.join(ignored)}): "
                "two promotions could take one version and the serving pointer would be last-writer-wins. Point "
                "SERVING_BUCKET / S3_ENDPOINT_URL at a store that honours them (AWS S3, MinIO)"
            )
        _HONOURS_CONDITIONS.add(probed)

    def keys(self, prefix: str) -> list[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        found = []
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.root + prefix):
            found += [item["Key"].removeprefix(self.root) for item in page.get("Contents", [])]
        return found

    def version_numbers(self) -> list[int]:
        """Every numbered directory, committed or not."""
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.root, Delimiter="/"
        )
        names = [
            p["Prefix"].removeprefix(self.root).strip("/") for page in pages for p in page.get("CommonPrefixes", [])
        ]
        return sorted(int(n) for n in names if n.isdigit())

    def manifest(self, number: int) -> dict:
        """The commit marker of version ``number``; a version without one is refused by name."""
        manifest = self.read_json(f"{number}/{MANIFEST}")
        if manifest is None:
            raise PromotionError(f"{self.model} version {number} is not a committed version on S3 (no {MANIFEST})")
        return manifest

    def committed(self) -> dict[int, dict]:
        """Serving version -> manifest, for versions with a commit marker only."""
        manifests = {n: self.read_json(f"{n}/{MANIFEST}") for n in self.version_numbers()}
        return {n: m for n, m in manifests.items() if m is not None}

    def delete(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):
            chunk = [{"Key": self.root + k} for k in keys[start : start + 1000]]
            if chunk:
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": chunk, "Quiet": True})


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


def committed_manifest(settings: Settings, model: str, number: int) -> dict:
    return Store(settings, model).manifest(number)


def point_serving(settings: Settings, model: str, number: int, rollback: bool = False) -> dict:
    """Move the runtime's pointer to committed version ``number`` and write its Kubernetes objects.

    The pointer moves forward only: a version at or below the one already served leaves it where it is
    (``moved`` False), so promotions finishing out of order never move serving backwards. Only
    ``rollback`` moves it to a lower version.
    """
    store = Store(settings, model)
    store.check_conditional_writes()  # the pointer's compare-and-swap rests on them
    manifest = store.manifest(number)
    layout = serving_layout.layout_for(manifest["target"], [f["artifact_path"] for f in manifest["files"]])
    inputs = [TensorSpec.model_validate(s) for s in manifest["inputs"]]
    outputs = [TensorSpec.model_validate(s) for s in manifest["outputs"]]
    dynamic = manifest["batch_size"] is None
    pointer = serving_layout.pointer_text(
        layout, model, store.uri().rstrip("/"), number, inputs, outputs, 64 if dynamic else 0, manifest["precision"],
        manifest.get("runtime_settings") or {}, batch_size=manifest["batch_size"],
    )  # fmt: skip
    objects = kubernetes.k8s_objects(
        layout,
        model,
        number,
        manifest["target"],
        pointer_uri=store.uri(layout.pointer_file),
        repository_uri=f"s3://{store.bucket}/{settings.serving_prefix}".rstrip("/"),
        s3_endpoint_url=settings.serving_s3_endpoint_url,
        region=settings.serving_region or region(),
    )
    kubernetes.validate_k8s(objects)
    k8s_key = f"{K8S_DIR}/{number}.yaml"
    store.client.put_object(Bucket=store.bucket, Key=store.root + k8s_key, Body=kubernetes.k8s_yaml(objects).encode())
    served = _move_pointer(store, layout.pointer_file, pointer, number, rollback)
    return {
        "model": model,
        "version": number,
        "served_version": served,
        "moved": served == number,
        "runtime": layout.runtime,
        "pointer_uri": store.uri(layout.pointer_file),
        "k8s_uri": store.uri(k8s_key),
        "pointer": pointer,
    }


POINTER_VERSION = "serving-version"  # object metadata of the pointer: the serving version it names


def _read_pointer(store: Store, key: str) -> tuple[str, int] | None:
    """(ETag, serving version) of the pointer, or None where there is none yet."""
    from botocore.exceptions import ClientError

    try:
        head = store.client.head_object(Bucket=store.bucket, Key=key)
    except ClientError as exc:
        if error_code(exc) in ("NoSuchKey", "404"):
            return None
        raise
    # a pointer written before versions were recorded in its metadata counts as version 0: any version passes it
    return head["ETag"], int(head.get("Metadata", {}).get(POINTER_VERSION, "0"))


def _move_pointer(store: Store, pointer_file: str, body: str, number: int, rollback: bool) -> int:
    """Compare-and-swap on the pointer's ETag; the serving version it names afterwards.

    Each write is conditional on the ETag just read (``IfNoneMatch`` where there is no pointer yet), so a
    promotion that read a pointer another one has since moved writes nothing and reads again. After a write
    the pointer is read back once more and the loop goes on while it names a lower version: AWS S3 and
    MinIO make the conditional write atomic, moto's server checks then writes without a lock.
    """
    from botocore.exceptions import ClientError

    key = store.root + pointer_file
    written = False
    for attempt in range(50):
        current = _read_pointer(store, key)
        if current is not None:
            if rollback and written:  # moved back; a newer promotion that landed since keeps its place
                return current[1]
            if current[1] == number or (not rollback and current[1] > number):
                return current[1]
        condition = {"IfNoneMatch": "*"} if current is None else {"IfMatch": current[0]}
        try:
            store.client.put_object(
                Bucket=store.bucket, Key=key, Body=body.encode(), Metadata={POINTER_VERSION: str(number)}, **condition
            )
            written = True
            time.sleep(0.05)  # then read back: a racing write that slipped past a non-atomic check shows by now
        except ClientError as exc:
            if error_code(exc) not in ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey", "404"):
                raise
            time.sleep(random.uniform(0, 0.05 * min(attempt + 1, 10)))  # another promotion moved it: read again
    raise PromotionError(
        f"{store.uri(pointer_file)} kept changing: gave up moving it to version {number} after 50 tries"
    )
