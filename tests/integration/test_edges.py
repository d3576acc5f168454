"""Deployment edges: names that come from elsewhere never leave their folder (S3 keys, a cache entry's file list),
the registry is read page after page, and a serving store that ignores conditional writes is refused."""

import json

import pytest

from tasks.compile.cache import CorruptEntry, S3Cache
from tasks.core import store
from tasks.core.files import OutsideError, inside
from tasks.core.records import FileRef
from tasks.core.storage import s3_client
from tasks.registry.client import client
from tasks.registry.review import registered_models
from tasks.serving.store import PromotionError, Store
from tasks.sources.export import ModelLoadError, fetch_s3_source

pytestmark = pytest.mark.integration
BUCKET = "remote-names"


@pytest.fixture(scope="module")
def bucket(local_services):
    from devtools import services

    services.ensure_buckets(local_services, f"s3://{BUCKET}")
    return s3_client(local_services)


@pytest.mark.parametrize("name", ["../escape", "a/../../escape", "/etc/passwd", "..", "."])
def test_a_name_that_leaves_its_folder_is_refused(tmp_path, name, reliability):
    reliability.bad_inputs += 1
    with pytest.raises(OutsideError, match="would be written outside"):
        inside(tmp_path / "dest", name)
    assert inside(tmp_path / "dest", "neff/graph.neff") == tmp_path / "dest" / "neff" / "graph.neff"


def test_s3_keys_with_dot_dot_are_refused_by_the_run_store_and_the_model_source(bucket, tmp_path, reliability):
    bucket.put_object(Bucket=BUCKET, Key="runs/r/compiled/x/model.onnx", Body=b"graph")
    bucket.put_object(Bucket=BUCKET, Key="runs/r/compiled/x/../../../../escape", Body=b"owned")
    reliability.bad_inputs += 2
    with pytest.raises(OutsideError, match="escape"):
        store.fetch(FileRef(uri=f"s3://{BUCKET}/runs/r/compiled/x", sha256="0" * 64, tree=True))
    bucket.put_object(Bucket=BUCKET, Key="models/saved/saved_model.pb", Body=b"pb")
    bucket.put_object(Bucket=BUCKET, Key="models/saved/../../../escape", Body=b"owned")
    with pytest.raises(ModelLoadError, match="would be written outside"):
        fetch_s3_source(f"s3://{BUCKET}/models/saved/", tmp_path / "source")
    assert not list(tmp_path.rglob("escape"))


def test_a_cache_entry_listing_a_file_outside_its_folder_is_corrupt(local_services, bucket, tmp_path, reliability):
    cache = S3Cache(f"s3://{BUCKET}/cache", local_services.s3_endpoint_url)
    entry = {"files": {"../../escape": "0" * 64}, "tree_sha256": "0" * 64}
    bucket.put_object(Bucket=BUCKET, Key="cache/k1/entry.json", Body=json.dumps(entry).encode())
    reliability.bad_inputs += 1
    with pytest.raises(CorruptEntry, match="would be written outside"):
        cache.fetch("k1", tmp_path / "dest")
    assert not list(tmp_path.rglob("escape"))


def test_the_registry_is_read_page_after_page(local_services):
    registry = client(local_services)
    names = [f"paged-{i}" for i in range(5)]
    for name in names:
        registry.create_registered_model(name)
    found = {m.name for m in registered_models(registry, page_size=2)}
    assert set(names) <= found
    assert len(list(registry.search_registered_models(max_results=2))) == 2  # what one call alone would have seen


class IgnoresConditions:
    """A store that takes If-None-Match / If-Match and ignores them (as some S3-compatible stores do): the real
    client underneath, the conditions dropped."""

    def __init__(self, client):
        self._client = client

    def put_object(self, **kwargs):
        kwargs.pop("IfNoneMatch", None)
        kwargs.pop("IfMatch", None)
        return self._client.put_object(**kwargs)

    def __getattr__(self, name):
        return getattr(self._client, name)


def test_a_store_that_ignores_conditional_writes_is_refused_before_any_claim_or_pointer(local_services, reliability):
    from tasks.serving import store as serving_store

    honest = Store(local_services, "probe-honest")
    serving_store._HONOURS_CONDITIONS.discard((local_services.s3_endpoint_url, honest.bucket))
    honest.check_conditional_writes()  # moto's server honours them
    assert honest.keys(f"{serving_store.PROBES}/") == []  # the probe leaves nothing behind

    serving_store._HONOURS_CONDITIONS.clear()
    lax = Store(local_services, "probe-lax")
    lax.client = IgnoresConditions(lax.client)
    reliability.bad_inputs += 1
    with pytest.raises(
        PromotionError, match=r"ignores conditional writes \(If-None-Match, If-Match\).*last-writer-wins"
    ):
        lax.check_conditional_writes()
    assert lax.keys("") == []  # refused before anything of the model was written
    with pytest.raises(PromotionError, match="ignores conditional writes"):
        lax.check_conditional_writes()  # never remembered as honest
