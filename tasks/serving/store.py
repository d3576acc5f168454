"""The serving bucket's keys of one model, ``s3://<bucket>/<prefix>/<model>/``: the S3 client and its listings,
writes only if absent (and the probe that the store honours conditional writes), deletes, and the committed
versions read by their commit marker ``<N>/manifest.json``. Committing a version is tasks.serving.commit; the
serving pointer is tasks.serving.pointer."""

from __future__ import annotations

import json
import os
import random

from tasks.core.schema import check_safe_name
from tasks.core.settings import Settings
from tasks.core.storage import error_code, s3_client

# Heavy, so imported inside the functions that need them (DAG parsing and most tasks never do): botocore.

MANIFEST = "manifest.json"


class PromotionError(RuntimeError):
    pass


PROBES = ".probes"  # under the model's prefix: a probe's key, deleted as soon as it has answered
_HONOURS_CONDITIONS: set[tuple] = set()  # (endpoint, bucket) pairs whose conditional writes were probed


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


def committed_manifest(settings: Settings, model: str, number: int) -> dict:
    return Store(settings, model).manifest(number)
