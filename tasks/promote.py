"""Promote stage: copy a registered version to ``s3://<bucket>/<prefix>/<model>/<version>/`` for serving.

``manifest.json`` is written last and only if absent (a conditional put), so it is
the commit marker: a version without it is incomplete, and a promoted version is
never overwritten.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from tasks.compile import verify
from tasks.records import CompiledArtifact, ExportedModel, Promotion, Registration
from tasks.settings import Settings
from tasks.storage import error_code as _error_code
from tasks.storage import s3_client

MANIFEST = "manifest.json"


class PromotionError(RuntimeError):
    pass


def _read_manifest(client, bucket: str, key: str) -> dict | None:
    from botocore.exceptions import ClientError

    try:
        return json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    except ClientError as exc:
        if _error_code(exc) in ("NoSuchKey", "404"):
            return None
        raise


def promote(
    settings: Settings, exported: ExportedModel, artifact: CompiledArtifact, registration: Registration
) -> Promotion:
    from botocore.exceptions import ClientError

    root = verify(artifact)
    client = s3_client(settings)
    bucket = settings.serving_bucket
    try:
        client.head_bucket(Bucket=bucket)
    except ClientError as exc:
        raise PromotionError(
            f"bucket {bucket!r} is not reachable at {settings.s3_endpoint_url or 'AWS S3'}: {_error_code(exc) or exc}"
        ) from exc

    prefix = "/".join(filter(None, [settings.serving_prefix, exported.name, registration.version]))
    manifest_key = f"{prefix}/{MANIFEST}"
    uri = f"s3://{bucket}/{prefix}/"
    existing = _read_manifest(client, bucket, manifest_key)
    if existing is not None:
        if existing.get("artifact_sha256") == artifact.sha256:
            return Promotion(
                uri=uri, endpoint_url=settings.s3_endpoint_url, manifest_uri=uri + MANIFEST, manifest=existing
            )
        raise PromotionError(
            f"{uri} is already promoted from another artifact; a promoted version is never overwritten"
        )

    from tasks.files import sha256_file

    files = []
    for name in artifact.files:
        path = root / name
        size = path.stat().st_size
        client.upload_file(str(path), bucket, f"{prefix}/{name}")
        stored = client.head_object(Bucket=bucket, Key=f"{prefix}/{name}")["ContentLength"]
        if stored != size:
            raise PromotionError(f"upload of {name} is incomplete: {stored} of {size} bytes")
        files.append({"path": name, "sha256": sha256_file(path), "size": size})

    manifest = {
        "model": exported.name,
        "version": registration.version,
        "files": files,
        "artifact_sha256": artifact.sha256,
        "target": artifact.config.target,
        "precision": artifact.config.precision,
        "batch_size": artifact.config.batch_size,
        "inputs": [spec.to_json() for spec in exported.inputs],
        "outputs": [spec.to_json() for spec in exported.outputs],
        "source_sha256": exported.source_sha256,
        "mlflow": {
            "tracking_uri": settings.mlflow_tracking_uri,
            "run_id": registration.run_id,
            "registered_model": registration.registered_model,
            "version": registration.version,
        },
        "promoted_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    try:
        client.put_object(
            Bucket=bucket,
            Key=manifest_key,
            Body=json.dumps(manifest, indent=2).encode(),
            ContentType="application/json",
            IfNoneMatch="*",
        )
    except ClientError as exc:
        if _error_code(exc) != "PreconditionFailed":
            raise
        # Another promotion committed first; accept it only if it is the same artifact.
        existing = _read_manifest(client, bucket, manifest_key) or {}
        if existing.get("artifact_sha256") != artifact.sha256:
            raise PromotionError(f"{uri} was promoted concurrently from another artifact") from exc
        manifest = existing
    return Promotion(uri=uri, endpoint_url=settings.s3_endpoint_url, manifest_uri=uri + MANIFEST, manifest=manifest)
