"""Provenance must survive a Milvus server restart (2.3.x forgets collection properties)."""

from __future__ import annotations

from pathlib import Path

import pytest

from search.config import Settings
from search.store import MilvusStore
from tests.server_backend import require_server_package, start_milvus_server


@pytest.mark.server
@pytest.mark.slow
def test_provenance_survives_server_restart(tmp_path: Path, embedder) -> None:
    require_server_package()
    base = tmp_path / "milvus"
    server = start_milvus_server(base, session_ttl=3)
    try:
        settings = Settings.of(uri=server.uri, collection="restart", retries=0)
        store = MilvusStore(settings)
        store.create("restart__v1", embedder.info)
        store.upsert(
            "restart__v1",
            [
                {
                    "id": "a",
                    "vector": [1.0] + [0.0] * (embedder.info.dim - 1),
                    "image": "a.jpg",
                    "content_hash": "h",
                    "meta_hash": "m",
                    "source_sig": "",
                    "metadata": {},
                }
            ],
        )
        store.flush("restart__v1")
        store.close()
    finally:
        server.stop()
    server = start_milvus_server(base, session_ttl=3)  # same data, fresh process
    try:
        store = MilvusStore(Settings.of(uri=server.uri, collection="restart", retries=0))
        recorded = store.provenance("restart__v1")
        assert recorded is not None and recorded.key == embedder.info.key
        store.check_model("restart__v1", embedder.info)
        assert store.count("restart__v1") == 1
        store.close()
    finally:
        server.stop()
