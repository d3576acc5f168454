"""The run store on one machine (file://): what crosses stages is a URI naming its host and a sha256; a reader
checks it before use, a changed object is refused by name, and another host's file is never read (the S3 store,
its downloads and the host's cache: tests/integration/test_run_store.py)."""

from pathlib import Path

import pytest

from tasks.core import store
from tasks.core.files import OtherHostError, this_host, tree_sha256
from tasks.core.records import FileRef
from tasks.core.settings import WORKER_HOSTNAME_ENV


@pytest.fixture
def run_uri(tmp_path) -> str:
    return store.host_uri((tmp_path / "runs" / "run-1").as_uri())


def test_a_file_put_in_the_store_is_named_by_host_and_read_in_place_once_checked(tmp_path, run_uri):
    local = tmp_path / "model.onnx"
    local.write_bytes(b"graph" * 1000)
    ref = store.put_file(local, store.join(run_uri, "export", "model.onnx"))
    assert ref.uri.startswith(f"file://{this_host()}/") and ref.size == 5000 and not ref.tree
    local.unlink()  # the stage's own copy is gone: what others read is the store's
    fetched = store.fetch(ref)
    assert fetched == store.local_path(ref.uri) and fetched.read_bytes() == b"graph" * 1000


def test_a_tree_round_trips_and_a_retried_put_replaces_what_an_earlier_attempt_left(tmp_path, run_uri):
    tree = tmp_path / "compiled"
    (tree / "sub").mkdir(parents=True)
    (tree / "model.xml").write_text("xml")
    (tree / "sub" / "model.bin").write_bytes(b"\0" * 64)
    where = store.join(run_uri, "compiled", "openvino-fp32")
    (Path(store.local_path(where)) / "stale").mkdir(parents=True)  # an earlier, interrupted attempt
    (Path(store.local_path(where)) / "stale" / "leftover").write_text("x")
    ref = store.put_tree(tree, where)
    assert ref.tree and ref.sha256 == tree_sha256(tree)
    fetched = store.fetch(ref)
    assert sorted(p.relative_to(fetched).as_posix() for p in fetched.rglob("*") if p.is_file()) == [
        "model.xml",
        "sub/model.bin",
    ]


def test_an_object_changed_after_it_was_written_is_refused_by_name(tmp_path, run_uri):
    local = tmp_path / "dataset.npz"
    local.write_bytes(b"samples" * 100)
    ref = store.put_file(local, store.join(run_uri, "dataset", "dataset.npz"))
    store.put_bytes(b"samples" * 10, ref.uri)  # cut short, or rewritten, after the record was made
    with pytest.raises(store.IntegrityError, match=r"dataset/dataset\.npz failed its sha256 check"):
        store.fetch(ref)


def test_an_object_missing_from_the_store_is_named(run_uri):
    with pytest.raises(store.StoreError, match=r"export/model\.onnx is not in the run store"):
        store.fetch(FileRef(uri=store.join(run_uri, "export", "model.onnx"), sha256="1" * 64))


def test_another_hosts_file_is_refused_with_the_reason_not_read_from_the_same_path_here(tmp_path, monkeypatch):
    local = tmp_path / "model.onnx"
    local.write_bytes(b"graph")
    monkeypatch.setenv(WORKER_HOSTNAME_ENV, "compile-worker")
    ref = store.put_file(local, store.host_uri((tmp_path / "runs" / "model.onnx").as_uri()))
    assert ref.uri.startswith("file://compile-worker/")
    monkeypatch.setenv(WORKER_HOSTNAME_ENV, "cpu-worker")  # the next stage runs on another host, same disk path
    assert Path(store.local_path(ref.uri.replace("compile-worker", "localhost"))).is_file()  # a stale copy is there
    with pytest.raises(
        OtherHostError, match=r"is a path on host 'compile-worker'.*runs on 'cpu-worker'.*RUN_STORE_URI"
    ):
        store.fetch(ref)
    with pytest.raises(OtherHostError, match="compile-worker"):
        store.put_bytes(b"{}", store.join(ref.uri.rsplit("/", 1)[0], "stages", "x.json"))


def test_a_store_uri_of_another_kind_is_refused():
    with pytest.raises(store.StoreError, match="use file:///<dir> .* or s3://<bucket>/<prefix>"):
        store.host_uri("gs://bucket/runs")
