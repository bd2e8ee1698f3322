"""``--write bulk`` against the real Milvus 2.3.5 standalone: Parquet files written with
pymilvus's BulkWriter into the server's local storage, one import job per file, the index
built; the same collection as the upsert path."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from indexer.options import IndexOptions
from indexer.pipeline import run_index
from search.errors import ConfigError
from search.store import MilvusStore
from tests.helpers import photo, product_catalog
from tests.server_backend import ServerHandle, drop_namespace, server_settings

pytestmark = [pytest.mark.server, pytest.mark.slow]
ENV_BULK_DIR = "VSEARCH_TEST_BULK_DIR"  # with VSEARCH_TEST_MILVUS_URI: a folder it reads


def _bulk_dir(server: ServerHandle) -> Path:
    if server.base_dir is not None:  # the wheel's standalone: localStorage.path = base/data
        return server.base_dir / "data" / "vsearch-bulk"
    if os.environ.get(ENV_BULK_DIR):
        return Path(os.environ[ENV_BULK_DIR])
    pytest.skip(f"an external server needs {ENV_BULK_DIR}: a folder its storage reads")


def test_bulk_import_builds_the_same_collection_as_upserts(
    milvus_server: ServerHandle, tmp_path: Path, cache_dir: Path, embedder
) -> None:
    pytest.importorskip("pyarrow")
    manifest = product_catalog(tmp_path / "cat", per_product=2)
    bulk = server_settings(milvus_server.uri, tmp_path / "a", cache_dir)
    upsert = server_settings(milvus_server.uri, tmp_path / "b", cache_dir)
    folder = _bulk_dir(milvus_server)
    try:
        b_store, u_store = MilvusStore(bulk), MilvusStore(upsert)
        opts = IndexOptions(write="bulk", bulk_dir=str(folder))
        report = run_index(manifest, bulk, opts, embedder=embedder, store=b_store)
        assert (report.added, report.embedded, report.count, report.live) == (8, 8, 8, True)
        assert not any(folder.rglob("*.parquet"))  # imported files are removed
        ref = run_index(manifest, upsert, IndexOptions(), embedder=embedder, store=u_store)
        a = {
            r["id"]: r
            for r in b_store.get(
                report.collection, sorted(b_store.fingerprints(report.collection)), vectors=True
            )
        }  # noqa: E501
        b = {
            r["id"]: r
            for r in u_store.get(
                ref.collection, sorted(u_store.fingerprints(ref.collection)), vectors=True
            )
        }  # noqa: E501
        assert sorted(a) == sorted(b) and len(a) == 8
        for key in a:
            assert a[key]["metadata"] == b[key]["metadata"]
            assert a[key]["content_hash"] == b[key]["content_hash"]
            assert np.allclose(a[key]["vector"], b[key]["vector"], atol=1e-6)
        # the index is built: a catalog photo finds itself first
        vec = embedder.embed_images([photo("coffee")])
        hits = b_store.search(report.collection, vec, limit=3)[0]
        assert hits[0].id.startswith("coffee-")
        desc = b_store.client.describe_index(report.collection, "vector")
        assert int(desc["indexed_rows"]) == 8 and int(desc["pending_index_rows"]) == 0

        # bulk inserts: a run that would re-embed stored items is refused, upsert does it
        (tmp_path / "cat" / "img" / "coffee-0.jpg").write_bytes(
            (tmp_path / "cat" / "img" / "rocket-0.jpg").read_bytes()
        )
        with pytest.raises(ConfigError, match="already stored"):
            run_index(manifest, bulk, opts, embedder=embedder, store=b_store)
        again = run_index(manifest, bulk, IndexOptions(), embedder=embedder, store=b_store)
        assert (again.embedded, again.count) == (1, 8)
    finally:
        drop_namespace(milvus_server.uri, bulk.store.collection)
        drop_namespace(milvus_server.uri, upsert.store.collection)
