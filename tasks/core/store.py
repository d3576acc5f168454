"""The run store: where a run's stages hand each other what they made, across hosts.

A run's objects (export, dataset, calibration set, compiled artifacts, outputs, stage results, gate docs, report,
plots) live under one prefix, ``<RUN_STORE_URI>/<run>/``: ``file:///<dir>`` on one machine (``make demo``),
``s3://<bucket>/<prefix>`` on a fleet. Both are reached through fsspec (s3fs for S3, the filesystem Airflow's
``ObjectStoragePath`` uses through the Amazon provider), so the code path is the same.

Records between stages carry a store URI and its sha256 (:class:`FileRef`), never a host-local path. A stage that
reads an object fetches it into this host's content-addressed cache (``<home>/cache/objects/<sha256>``), checked
against the sha256 the writer recorded; a download that does not match is fetched once more, then refused by name.
An object on this host's own disk (a ``file://`` store) is read where it is, after the same check.
A ``file://`` URI names the host whose disk holds it (``file://<host>/<path>``): another host's file is refused
with the reason, never read from a stale local copy that happens to sit at the same path.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlparse

from tasks.core import settings as settings_module
from tasks.core.files import (
    OtherHostError,
    inside,
    local_path,
    sha256_chunks,
    sha256_file,
    this_host,
    tree_files,
    tree_sha256,
    write_atomic,
)
from tasks.core.records import CompiledArtifact, FileRef, Status
from tasks.core.storage import region

# Heavy, so imported inside the functions that need them (DAG parsing and most tasks never do): fsspec, s3fs.

FETCH_ATTEMPTS = 2  # a download that fails its sha256 is fetched once more before the stage fails
STAGES_DIR = "stages"  # under a run's prefix: each stage's result (<stage>[-<config>].json) or error (.error.json)

__all__ = ["OtherHostError", "StoreError", "IntegrityError", "fetch", "put_file", "put_tree", "put_bytes", "local_path"]


class StoreError(RuntimeError):
    """An object the run needs is missing from the run store, or the store URI is not one we can use."""


class IntegrityError(StoreError):
    """A fetched object does not match the sha256 its writer recorded (cut short, or changed since)."""


def host_uri(uri: str) -> str:
    """``uri`` with this host named where it is a ``file://`` URI without one; other URIs as they are."""
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        return uri.rstrip("/")
    if parsed.scheme not in ("", "file"):
        raise StoreError(f"run store URI {uri!r}: use file:///<dir> (one machine) or s3://<bucket>/<prefix> (a fleet)")
    if parsed.scheme == "file" and parsed.netloc:
        local_path(uri)  # another host's: refused here, by name
        return uri.rstrip("/")
    return f"file://{this_host()}{quote(str(Path(local_path(uri)).resolve()))}"


def join(uri: str, *parts: str) -> str:
    return "/".join([uri.rstrip("/"), *(p.strip("/") for p in parts if p)])


def name_of(uri: str) -> str:
    return urlparse(uri).path.rstrip("/").rsplit("/", 1)[-1]


_S3: dict[tuple, object] = {}


def _s3_filesystem():
    """s3fs on the pipeline's endpoint, with the same client settings as tasks.core.storage's boto3 client."""
    import s3fs

    settings = settings_module.load()
    attempts = int(os.environ.get("AWS_MAX_ATTEMPTS", "6"))
    key = (os.getpid(), settings.s3_endpoint_url, region(), attempts)
    if key not in _S3:
        _S3[key] = s3fs.S3FileSystem(
            endpoint_url=settings.s3_endpoint_url,
            client_kwargs={"region_name": region()},
            config_kwargs={
                # S3-compatible stores reject the CRC checksums botocore >= 1.36 sends by default
                "request_checksum_calculation": "when_required",
                "response_checksum_validation": "when_required",
                "retries": {"max_attempts": attempts, "mode": "standard"},
                "connect_timeout": 5,
                "read_timeout": 60,
            },
            skip_instance_cache=True,
            use_listings_cache=False,  # other hosts write the same prefixes: never answer from a stale listing
        )
    return _S3[key]


def _filesystem(uri: str):
    """(fsspec filesystem, its path) of a store URI; another host's ``file://`` URI is refused by name."""
    from fsspec.implementations.local import LocalFileSystem

    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise StoreError(f"run store URI {uri!r} names no bucket")
        return _s3_filesystem(), f"{parsed.netloc}/{parsed.path.strip('/')}".rstrip("/")
    if parsed.scheme in ("", "file"):
        return LocalFileSystem(), str(local_path(uri))
    raise StoreError(f"run store URI {uri!r}: use file:///<dir> (one machine) or s3://<bucket>/<prefix> (a fleet)")


def _is_local(fs) -> bool:
    return "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))


def put_file(local: str | Path, uri: str) -> FileRef:
    """Put one local file at ``uri``; readers see all of it or nothing (a rename on disk, one PUT on S3)."""
    local = Path(local)
    uri = host_uri(uri)
    fs, path = _filesystem(uri)
    ref = FileRef(uri=uri, sha256=sha256_file(local), size=local.stat().st_size)
    if _is_local(fs):
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.with_name(f".{target.name}.{uuid.uuid4().hex}.partial")
        try:
            shutil.copyfile(local, staging)
            os.replace(staging, target)
        finally:
            staging.unlink(missing_ok=True)
    else:
        fs.put_file(str(local), path)
    return ref


def put_tree(local_dir: str | Path, uri: str) -> FileRef:
    """Put a local directory at ``uri`` (whatever was there before is replaced); its sha256 is the tree's."""
    local_dir = Path(local_dir)
    uri = host_uri(uri)
    fs, path = _filesystem(uri)
    names = tree_files(local_dir)
    if not names:
        raise StoreError(f"{local_dir} holds no files to put at {uri}")
    ref = FileRef(
        uri=uri, sha256=tree_sha256(local_dir), size=sum((local_dir / n).stat().st_size for n in names), tree=True
    )
    if _is_local(fs):
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.with_name(f".{target.name}.{uuid.uuid4().hex}.partial")
        shutil.copytree(local_dir, staging)
        if target.exists():  # a retried stage's earlier attempt: moved aside first, then dropped
            old = target.with_name(f".{target.name}.{uuid.uuid4().hex}.old")
            target.rename(old)
            shutil.rmtree(old, ignore_errors=True)
        staging.rename(target)
    else:
        # A retried stage's earlier attempt may have left part of a tree here: nothing of it may stay, or the tree
        # that readers list would not be the one this record names.
        if fs.exists(path):
            fs.rm(path, recursive=True)
        for name in names:
            fs.put_file(str(local_dir / name), f"{path}/{name}")
    return ref


def put_bytes(data: bytes | str, uri: str) -> FileRef:
    """A small object (a stage's result, a report) written whole at ``uri``."""
    payload = data.encode() if isinstance(data, str) else data
    uri = host_uri(uri)
    fs, path = _filesystem(uri)
    if _is_local(fs):
        write_atomic(path, payload)
    else:
        fs.pipe_file(path, payload)
    return FileRef(uri=uri, sha256=sha256_chunks([payload]), size=len(payload))


def read_bytes(uri: str) -> bytes | None:
    """The object at ``uri``, or None where there is none."""
    fs, path = _filesystem(uri)
    try:
        return fs.cat_file(path)
    except (FileNotFoundError, IsADirectoryError):
        return None


def delete(uri: str) -> None:
    fs, path = _filesystem(uri)
    with contextlib.suppress(FileNotFoundError):
        if fs.exists(path):
            fs.rm(path, recursive=True)


def list_files(uri: str) -> list[str]:
    """Names of the objects directly under the prefix ``uri`` (none where it holds nothing)."""
    fs, path = _filesystem(uri)
    try:
        entries = fs.ls(path, detail=True)
    except FileNotFoundError:
        return []
    return sorted(e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries if e.get("type") == "file")


def _download(ref: FileRef, dest: Path) -> None:
    fs, path = _filesystem(ref.uri)
    try:
        if not ref.tree:
            dest.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(path, str(dest))
            return
        found = [p for p in fs.find(path) if not p.rstrip("/").endswith("/")]
    except FileNotFoundError:
        found = []
    if ref.tree and not found:
        raise StoreError(f"{ref.uri} is not in the run store (nothing under that prefix)")
    for item in found:
        target = inside(dest, item[len(path) + 1 :])
        target.parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(item, str(target))


def fetch(ref: FileRef) -> Path:
    """The object ``ref`` names, on this host, checked against the sha256 its writer recorded.

    An object of this host's own disk (a ``file://`` run store, a stage's local file) is read where it is: a copy
    would hold the same bytes, checked the same way. Anything else is downloaded into this host's cache and comes
    back as ``<cache>/<sha256>/<its name>`` (a tree as ``<cache>/<sha256>.tree/``); a download whose sha256
    differs from the record's (cut short, or changed in the store since it was written) is fetched again, then
    refused with :class:`IntegrityError` naming the object. Another host's ``file://`` object is refused by name.
    """
    if urlparse(ref.uri).scheme in ("", "file"):
        return _checked_in_place(ref)
    cache = settings_module.load().object_cache_dir
    entry = cache / (f"{ref.sha256}.tree" if ref.tree else ref.sha256)
    name = name_of(ref.uri) or "object"
    wanted = entry if ref.tree else entry / name
    if wanted.exists():
        return wanted
    cache.mkdir(parents=True, exist_ok=True)
    if not ref.tree and entry.is_dir():  # the same bytes under another name: a second name for them
        existing = next((p for p in entry.iterdir() if p.is_file() and not p.name.startswith(".")), None)
        if existing is not None:
            staging = entry / f".{name}.{uuid.uuid4().hex}"
            shutil.copyfile(existing, staging)
            os.replace(staging, wanted)
            return wanted
    got = ""
    for _attempt in range(FETCH_ATTEMPTS):
        staging = cache / f".{ref.sha256}.{uuid.uuid4().hex}.partial"
        try:
            _download(ref, staging if ref.tree else staging / name)
            got = tree_sha256(staging) if ref.tree else sha256_file(staging / name)
            if got == ref.sha256:
                try:
                    staging.rename(entry)
                except OSError:  # another task on this host placed it first; it holds the same bytes
                    if not wanted.exists():
                        raise
                return wanted
        except FileNotFoundError:
            raise StoreError(f"{ref.uri} is not in the run store") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    raise IntegrityError(
        f"{ref.uri} failed its sha256 check {FETCH_ATTEMPTS} times (fetched {got[:16]}..., the record says "
        f"{ref.sha256[:16]}...): the object in the run store was cut short or changed after it was written"
    )


def _checked_in_place(ref: FileRef) -> Path:
    path = local_path(ref.uri)  # another host's: refused here
    if not path.exists():
        raise StoreError(f"{ref.uri} is not in the run store")
    got = tree_sha256(path) if path.is_dir() else sha256_file(path)
    if got != ref.sha256:
        raise IntegrityError(
            f"{ref.uri} failed its sha256 check (it holds {got[:16]}..., the record says {ref.sha256[:16]}...): "
            "it was cut short or changed after it was written"
        )
    return path


def artifact_dir(artifact: CompiledArtifact) -> Path:
    """The compiled files of ``artifact`` on this host, exactly as compiled (fetched and checked by sha256)."""
    if artifact.status != Status.OK:
        raise ValueError(f"config {artifact.config.key} did not compile: {artifact.reason}")
    return fetch(artifact.ref)


def publish(ref: FileRef, uri: str) -> FileRef:
    """A local file or directory a stage wrote (``ref``) put in the run store at ``uri``, as the same bytes."""
    source = local_path(ref.uri)
    put = put_tree(source, uri) if ref.tree or source.is_dir() else put_file(source, uri)
    if ref.sha256 and put.sha256 != ref.sha256:
        raise StoreError(f"{source} changed between being written and being put in the run store (sha256 differs)")
    return put


def put_json(uri: str, obj: object) -> FileRef:
    return put_bytes(json.dumps(obj, indent=2, default=str) + "\n", uri)


def read_json(uri: str) -> Any:
    """The JSON object at ``uri``, or None where there is none."""
    data = read_bytes(uri)
    return None if data is None else json.loads(data)
