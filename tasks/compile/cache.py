"""Content-addressed cache of compiled artifacts, on local disk or on S3 (so CPU workers share it).

The key is a sha256 over everything the compiled files depend on: what the model is, as
the compiler reads it (the digest of the exported graph and weights the target compiles
from, ``tasks.sources.graph_digest``: ONNX canonically, so tf2onnx's run-to-run names do
not matter; with a state dict, also the ExportedProgram that captured its architecture),
the source's sha256, the input and output specs, the target, precision and batch size,
the compiler's version and flags, the calibration data, and the target's own code
(which lays the artifact out). No change to a source file, a module it imports, a
weight file or a remote object that changes the graph can reuse an entry. An entry is a
directory of files plus ``entry.json`` (written last, the commit marker) that lists
each file's sha256; a fetched entry whose files do not match is reported corrupt
and compiled again, never used.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
import time
import uuid
from pathlib import Path

from tasks import targets
from tasks.core.files import inside, local_path, sha256_file, tree_files, tree_sha256, write_json
from tasks.core.records import CompileConfig, ExportedModel, Fingerprint
from tasks.core.storage import error_code, s3_client, split_s3_uri
from tasks.targets import base as targets_base

# Heavy, so imported inside the functions that need them (DAG parsing and most tasks never do): botocore.

ENTRY = "entry.json"
FILES = "files"
STALE_S = 3600  # a staging directory this old belongs to a worker that died while storing


class CorruptEntry(RuntimeError):
    """A cache entry exists but its files do not match their recorded sha256."""


def target_code_sha256(name: str) -> str:
    """sha256 of the code that writes and reads a target's artifacts (its module and the shared base), so an
    entry laid out by older code is never handed to newer code."""
    module = Path(inspect.getfile(type(targets.get(name))))
    digest = hashlib.sha256()
    for path in (module, Path(inspect.getfile(targets_base))):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def cache_key(
    exported: ExportedModel, config: CompileConfig, fingerprint: Fingerprint, calibration_sha256: str = ""
) -> str:
    if fingerprint.source_format not in exported.formats:
        raise ValueError(
            f"target {config.target} compiles from {fingerprint.source_format!r}, which the export did not "
            f"write (it wrote {', '.join(exported.formats)})"
        )
    material = {
        "source_sha256": exported.source_sha256,
        "graph_sha256": {fmt: _graph_of(exported, fmt) for fmt in _compiled_from(fingerprint.source_format)},
        "inputs": [spec.to_json() for spec in exported.inputs],
        "outputs": [spec.to_json() for spec in exported.outputs],
        "config": config.to_json(),
        "fingerprint": fingerprint.to_json(),
        "calibration_sha256": calibration_sha256,
        "target_code_sha256": target_code_sha256(config.target),
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


STATE_DICT_FORMATS = ("pytorch_state_dict",)
ARCHITECTURE_FORMAT = "exported_program"  # a state dict's architecture is code; its ExportedProgram is the graph


def _compiled_from(source_format: str) -> list[str]:
    return [source_format, ARCHITECTURE_FORMAT] if source_format in STATE_DICT_FORMATS else [source_format]


def _graph_of(exported: ExportedModel, fmt: str) -> str:
    """The format's graph digest; a record without one (or a state dict without its ExportedProgram) is known by
    its bytes, or by the source, which only ever costs a miss."""
    if fmt in exported.graph_sha256:
        return exported.graph_sha256[fmt]
    return exported.formats[fmt].sha256 if fmt in exported.formats else f"source {exported.source_sha256}"


class LocalCache:
    """Entries under ``<root>/<key>/``; a new entry is assembled aside and renamed into place."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.uri = str(self.root)

    def fetch(self, key: str, dest: Path) -> dict | None:
        entry_dir = self.root / key
        entry_path = entry_dir / ENTRY
        if not entry_path.is_file():
            return None
        entry = json.loads(entry_path.read_text())
        shutil.copytree(entry_dir / FILES, dest, dirs_exist_ok=True)
        _check(entry, dest, f"{entry_dir}")
        return entry

    def _sweep_stale(self) -> None:
        """Drop entries being assembled or dropped by a worker that died meanwhile (they are never read)."""
        cutoff = time.time() - STALE_S
        for leftover in [*self.root.glob(".*.partial"), *self.root.glob(".*.old")]:
            try:
                if leftover.stat().st_mtime < cutoff:
                    shutil.rmtree(leftover, ignore_errors=True)
            except FileNotFoundError:
                pass

    def store(self, key: str, source: Path, entry: dict) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._sweep_stale()
        staging = self.root / f".{key}.{uuid.uuid4().hex}.partial"
        shutil.copytree(source, staging / FILES)
        write_json(staging / ENTRY, entry)
        final = self.root / key
        if final.exists():  # a corrupt entry being replaced: move it aside first, then drop it
            trash = self.root / f".{key}.{uuid.uuid4().hex}.old"
            final.rename(trash)
            shutil.rmtree(trash, ignore_errors=True)
        try:
            staging.rename(final)
        except OSError:  # another worker stored the same key first; its entry is as good as ours
            shutil.rmtree(staging, ignore_errors=True)


class S3Cache:
    """Entries under ``s3://bucket/prefix/<key>/``; ``entry.json`` is uploaded after every file."""

    def __init__(self, uri: str, endpoint_url: str | None):
        self.uri = uri
        self.bucket, self.prefix = split_s3_uri(uri)
        self.client = s3_client(endpoint_url)

    def _key(self, key: str, name: str) -> str:
        return "/".join(part for part in (self.prefix, key, name) if part)

    def fetch(self, key: str, dest: Path) -> dict | None:
        from botocore.exceptions import ClientError

        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(key, ENTRY))["Body"].read()
        except ClientError as exc:
            if error_code(exc) in ("NoSuchKey", "404"):
                return None
            raise
        entry = json.loads(body)
        for name in entry["files"]:
            try:
                target = inside(dest, name)
            except ValueError as exc:
                raise CorruptEntry(f"cache entry s3://{self.bucket}/{self._key(key, '')}: {exc}") from exc
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                self.client.download_file(self.bucket, self._key(key, f"{FILES}/{name}"), str(target))
            except ClientError as exc:
                raise CorruptEntry(f"cache entry s3://{self.bucket}/{self._key(key, '')} lacks {name}") from exc
        _check(entry, dest, f"s3://{self.bucket}/{self._key(key, '')}")
        return entry

    def store(self, key: str, source: Path, entry: dict) -> None:
        for name in tree_files(source):
            self.client.upload_file(str(source / name), self.bucket, self._key(key, f"{FILES}/{name}"))
        self.client.put_object(Bucket=self.bucket, Key=self._key(key, ENTRY), Body=json.dumps(entry, indent=2).encode())


def _check(entry: dict, dest: Path, where: str) -> None:
    present = set(tree_files(dest))
    expected = set(entry["files"])
    if present != expected:
        raise CorruptEntry(f"cache entry {where} has files {sorted(present ^ expected)} that its entry.json does not")
    bad = [name for name, digest in entry["files"].items() if sha256_file(dest / name) != digest]
    if bad or tree_sha256(dest) != entry["tree_sha256"]:
        raise CorruptEntry(f"cache entry {where}: sha256 mismatch in {', '.join(bad) or 'the file list'}")


def entry_for(directory: Path, **fields) -> dict:
    return {
        "files": {name: sha256_file(directory / name) for name in tree_files(directory)},
        "tree_sha256": tree_sha256(directory),
        **fields,
    }


def open_cache(uri: str | None, endpoint_url: str | None = None) -> LocalCache | S3Cache | None:
    """The cache at ``uri`` (a directory, or s3://bucket/prefix); None or "" turns caching off."""
    if not uri:
        return None
    if uri.startswith("s3://"):
        return S3Cache(uri, endpoint_url)
    if uri.startswith("file://"):
        return LocalCache(local_path(uri))
    return LocalCache(os.path.expanduser(uri))
