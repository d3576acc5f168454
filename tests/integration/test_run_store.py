"""The run store on S3 (moto's server, the code path of a fleet): objects put whole, fetched into the host's cache
and checked; an object cut short in the bucket is refused by name."""

import pytest

from tasks.core import store
from tasks.core.files import tree_sha256

pytestmark = pytest.mark.integration


@pytest.fixture
def run_uri(local_services) -> str:
    from devtools import services

    services.ensure_buckets(local_services, "s3://run-store-test")
    return "s3://run-store-test/runs/run-1"


def test_a_tree_and_a_file_cross_hosts_through_s3_and_a_retried_put_leaves_nothing_of_the_first(tmp_path, run_uri):
    tree = tmp_path / "compiled"
    (tree / "neff").mkdir(parents=True)
    (tree / "model.pt").write_bytes(b"weights" * 100)
    (tree / "neff" / "graph.neff").write_bytes(b"\1" * 300)
    where = store.join(run_uri, "compiled", "neuron-inf2-bf16-bs8")
    stale = tmp_path / "stale"
    stale.mkdir()
    (stale / "half-written.bin").write_bytes(b"x")
    store.put_tree(stale, where)  # an earlier attempt, lost with its worker
    ref = store.put_tree(tree, where)
    assert ref.uri == where and ref.tree and ref.sha256 == tree_sha256(tree)
    fetched = store.fetch(ref)
    assert tree_sha256(fetched) == ref.sha256 and not (fetched / "half-written.bin").exists()

    result = store.put_json(store.join(run_uri, "stages", "plan.json"), {"configs": []})
    assert store.read_json(result.uri) == {"configs": []}
    assert store.list_files(store.join(run_uri, "stages")) == ["plan.json"]
    assert store.read_json(store.join(run_uri, "stages", "missing.json")) is None


def test_a_download_cut_short_is_fetched_again_into_the_hosts_cache(tmp_path, run_uri, monkeypatch, reliability):
    local = tmp_path / "calibration.npz"
    local.write_bytes(b"inputs" * 1000)
    ref = store.put_file(local, store.join(run_uri, "dataset", "calibration.npz"))
    real, attempts = store._download, []

    def first_cut_short(ref, dest):
        real(ref, dest)
        attempts.append(dest)
        if len(attempts) == 1:
            dest.write_bytes(dest.read_bytes()[:10])  # the connection dropped mid-object

    monkeypatch.setattr(store, "_download", first_cut_short)
    reliability.faults += 1
    fetched = store.fetch(ref)
    assert fetched.read_bytes() == b"inputs" * 1000 and len(attempts) == 2
    assert fetched.parent.name == ref.sha256 and fetched.name == "calibration.npz"  # content-addressed, named
    assert store.fetch(ref) == fetched and len(attempts) == 2  # a second read is the cache's


def test_an_object_cut_short_in_the_bucket_is_refused_by_name(tmp_path, run_uri, reliability):
    local = tmp_path / "dataset.npz"
    local.write_bytes(b"samples" * 1000)
    ref = store.put_file(local, store.join(run_uri, "dataset", "dataset.npz"))
    store.put_bytes(b"samples" * 10, ref.uri)  # the object in the bucket is no longer what was recorded
    reliability.faults += 1
    with pytest.raises(store.IntegrityError, match=r"s3://run-store-test/runs/run-1/dataset/dataset\.npz failed"):
        store.fetch(ref)
    assert not list(store.settings_module.load().object_cache_dir.glob(f"{ref.sha256}*"))  # nothing half-kept
