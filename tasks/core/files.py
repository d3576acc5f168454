"""Local file helpers: URIs, checksums and writes that are never seen half-done."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import unquote, urlparse

from tasks.core.records import FileRef
from tasks.core.settings import this_host


class OtherHostError(ValueError):
    """A ``file://`` URI names another host's disk: hosts hand each other objects through the run store."""


def to_uri(path: str | Path) -> str:
    return Path(path).resolve().as_uri()


def local_path(uri: str) -> Path:
    """Path of a ``file://`` URI (or a plain path) on this host; a URI naming another host is refused by name."""
    parsed = urlparse(uri)
    if parsed.scheme not in ("", "file"):
        raise ValueError(f"expected a local file URI, got {uri!r}")
    host = parsed.netloc
    if host and host.lower() not in ("localhost", this_host().lower()):
        raise OtherHostError(
            f"{uri} is a path on host {host!r}, and this task runs on {this_host()!r}: hosts share no disk, they "
            "hand each other objects through the run store. Give every worker the same RUN_STORE_URI, an s3:// "
            "prefix they all reach (a file:// run store serves one machine only)"
        )
    return Path(unquote(parsed.path))


class OutsideError(ValueError):
    """A name from elsewhere (an S3 key, an entry of a manifest) that would be written outside its directory."""


def inside(root: str | Path, name: str) -> Path:
    """``root / name`` for a ``name`` that came from elsewhere; refused where it would leave ``root`` (``..``,
    an absolute path)."""
    root = Path(root)
    target = (root / name).resolve()
    base = root.resolve()
    if target == base or not target.is_relative_to(base):
        raise OutsideError(
            f"{name!r} would be written outside {root}: refused (a remote name may not leave its folder)"
        )
    return root / name


def sha256_chunks(chunks: Iterable[bytes]) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def sha256_file(path: str | Path) -> str:
    with open(path, "rb") as handle:
        return sha256_chunks(iter(lambda: handle.read(1 << 20), b""))


def file_ref(path: str | Path) -> FileRef:
    path = Path(path)
    return FileRef(uri=to_uri(path), sha256=sha256_file(path), size=path.stat().st_size)


def dir_ref(path: str | Path) -> FileRef:
    """A directory as one FileRef: its tree checksum and total size."""
    path = Path(path)
    return FileRef(
        uri=to_uri(path),
        sha256=tree_sha256(path),
        size=sum(p.stat().st_size for p in path.rglob("*") if p.is_file()),
        tree=True,
    )


def tree_files(root: str | Path) -> list[str]:
    root = Path(root)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def tree_sha256(root: str | Path) -> str:
    """One checksum over a directory: relative names and contents, in sorted order."""
    root = Path(root)
    digest = hashlib.sha256()
    for name in tree_files(root):
        digest.update(name.encode() + b"\0" + sha256_file(root / name).encode() + b"\n")
    return digest.hexdigest()


def write_atomic(path: str | Path, data: bytes | str) -> Path:
    """Write via a temporary file in the same directory and rename, so readers see all or nothing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | Path, obj: object) -> Path:
    return write_atomic(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
