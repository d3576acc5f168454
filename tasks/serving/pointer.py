"""The runtime's serving pointer (``models.config``, ``config.pbtxt`` or ``config.json``) and the Kubernetes
objects of a committed version (``k8s/<N>.yaml``): the pointer moves forward only, by compare-and-swap on its
ETag, and only ``rollback`` moves it to a lower version."""

from __future__ import annotations

import random
import time

from tasks.core.schema import TensorSpec
from tasks.core.settings import Settings
from tasks.core.storage import error_code, region
from tasks.serving import kubernetes
from tasks.serving import layout as serving_layout
from tasks.serving.records import ServingPointer
from tasks.serving.store import PromotionError, Store

# Heavy, so imported inside the functions that need them (DAG parsing and most tasks never do): botocore.

K8S_DIR = "k8s"


def point_serving(settings: Settings, model: str, number: int, rollback: bool = False) -> ServingPointer:
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
    return ServingPointer(
        model=model,
        version=number,
        served_version=served,
        moved=served == number,
        runtime=layout.runtime,
        pointer_uri=store.uri(layout.pointer_file),
        k8s_uri=store.uri(k8s_key),
        pointer=pointer,
    )


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
