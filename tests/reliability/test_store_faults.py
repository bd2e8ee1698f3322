"""Store faults: the Milvus server dies mid-run (bounded retries, exit 4, next run repairs),
and collections of another model, schema or origin are refused, never overwritten."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import pytest

from indexer.pipeline import run_index
from search.config import Settings
from search.embedder import ModelInfo
from search.errors import ProvenanceMismatch, StoreError
from search.store import PROVENANCE_KEY, MilvusStore
from tests.helpers import PHOTOS, product_catalog

from .checks import assert_collection_equals_catalog, run_vsearch, vsearch_here
from .lite_server import LiteServer

pytestmark = [pytest.mark.slow, pytest.mark.server]


@pytest.fixture
def server(tmp_path: Path):
    srv = LiteServer(tmp_path / "server" / "lite.db")
    srv.data_dir.parent.mkdir(parents=True)
    srv.start()
    yield srv
    srv.kill()


def _server_settings(settings: Settings, srv: LiteServer, **kw) -> Settings:
    return settings.replace(uri=srv.uri, batch_size=2, workers=0, **kw)


def test_server_killed_mid_run_fails_cleanly_then_next_run_completes(
    server: LiteServer, settings: Settings, tmp_path: Path, embedder, monkeypatch, capsys
) -> None:
    manifest = product_catalog(tmp_path / "shop", PHOTOS[:3], per_product=3)  # 9 items
    s = _server_settings(settings, server, retries=3, retry_backoff=0.2)
    run = run_vsearch(s, "index", str(manifest), crash=(f"killpid:{server.pid}", 3))
    assert "SIGKILL server pid" in run.stderr
    assert run.returncode == 4, run.stderr[-3000:]
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("vsearch: error: Milvus") and "failed" in last, last
    assert "Traceback" not in run.stderr
    assert run.stderr.count("retry ") >= 3  # the bounded retries, with backoff, were logged
    # bounded: each failing call is retried at most `retries` times (no "retry 4"), with
    # the doubling backoff the settings ask for
    assert "retry 3 in 0.8s" in run.stderr and "retry 4 " not in run.stderr, run.stderr[-3000:]
    server.start()  # the same data directory and port
    # the next run (in process: the dying one above is the subprocess under test)
    code, out, err = vsearch_here(
        s, monkeypatch, capsys, "--quiet", "index", "--json", str(manifest)
    )
    assert code == 0, err[-3000:]
    report = json.loads(out)
    assert report["count"] == 9 and report["failed_count"] == 0 and report["live"]
    assert_collection_equals_catalog(s, manifest, embedder)


def test_store_down_from_the_start_is_exit_4(
    tmp_path: Path, settings: Settings, monkeypatch, capsys
) -> None:
    manifest = product_catalog(tmp_path / "shop", PHOTOS[:1], per_product=1)
    s = settings.replace(uri="http://127.0.0.1:9", retries=1, retry_backoff=0.1)  # nothing there
    code, _, err = vsearch_here(s, monkeypatch, capsys, "index", str(manifest))
    assert code == 4, err[-2000:]
    assert err.strip().splitlines()[-1].startswith("vsearch: error:")


def _fake_model(embedder, **changes) -> ModelInfo:
    data = {**embedder.info.to_dict(), **changes}
    return ModelInfo.from_dict(data)


def _rows(n: int, dim: int) -> list[dict]:
    return [
        {
            "id": f"keep-{i}",
            "vector": [1.0 if j == i else 0.0 for j in range(dim)],
            "image": "x.jpg",
            "content_hash": "h",
            "meta_hash": "m",
            "source_sig": "",
            "metadata": {"n": i},
        }
        for i in range(n)
    ]


@pytest.mark.parametrize(
    "kind", ["other-model", "other-dim", "other-schema", "not-vsearch", "forged"]
)
def test_mismatched_collection_is_refused_never_overwritten(
    kind: str, server: LiteServer, settings: Settings, tmp_path: Path, embedder
) -> None:
    s = _server_settings(settings, server, collection="shop")
    store = MilvusStore(s)
    name = "shop"  # the alias name is taken by a physical collection of someone else
    dim = embedder.info.dim
    if kind == "other-model":
        store.create(name, _fake_model(embedder, name="ViT-B-32", pretrained="openai"))
    elif kind == "other-dim":
        dim = 16
        store.create(name, _fake_model(embedder, dim=16, checkpoint="other"))
    elif kind == "other-schema":
        store.create(name, embedder.info)
        raw = json.loads(store.client.describe_collection(name)["properties"][PROVENANCE_KEY])
        raw["schema"] = 99
        store.client.alter_collection_properties(name, properties={PROVENANCE_KEY: json.dumps(raw)})
    else:  # a plain pymilvus collection; "forged" also carries a copy of our provenance
        store.client.create_collection(name, dimension=dim, id_type="string", max_length=64)
        if kind == "forged":
            ours = {"schema": 1, "metric": s.store.metric, "model": embedder.info.to_dict()}
            store.client.alter_collection_properties(
                name, properties={PROVENANCE_KEY: json.dumps(ours, sort_keys=True)}
            )
    if kind not in ("not-vsearch", "forged"):
        store.upsert(name, _rows(3, dim))
    else:
        store.client.insert(name, [{"id": f"keep-{i}", "vector": [0.5] * dim} for i in range(3)])
    store.flush(name)
    before = store.client.describe_collection(name).get("properties")
    manifest = product_catalog(tmp_path / "shop", PHOTOS[:1], per_product=2)
    if kind == "other-model":  # through the CLI once: the documented exit code 2
        run = run_vsearch(s, "index", str(manifest))
        assert run.returncode == 2, run.stderr[-3000:]
        assert "was built with model" in run.stderr.strip().splitlines()[-1]
    else:
        with pytest.raises(ProvenanceMismatch) as info:
            run_index(manifest, s, embedder=embedder)
        assert info.value.exit_code == 2
        assert any(w in str(info.value) for w in ("refusing", "model", "schema")), info.value
    assert store.count(name) == 3  # untouched
    assert store.client.describe_collection(name).get("properties") == before
    ids = sorted(
        r["id"] for r in store.client.query(name, filter="", output_fields=["id"], limit=10)
    )
    assert ids == ["keep-0", "keep-1", "keep-2"]
    assert store.client.list_collections() == [name]  # nothing created beside it either


def test_check_model_refuses_in_process(server: LiteServer, settings: Settings, embedder) -> None:
    store = MilvusStore(_server_settings(settings, server))
    store.create("c1", _fake_model(embedder, name="other"))
    with pytest.raises(ProvenanceMismatch, match="was built with model"):
        store.check_model("c1", embedder.info)
    assert issubclass(ProvenanceMismatch, StoreError) and ProvenanceMismatch.exit_code == 2


def test_connect_retries_while_the_server_starts(
    tmp_path: Path, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """cron starts the indexer while Milvus is still restarting: bounded connect retries."""
    srv = LiteServer(tmp_path / "late" / "lite.db")
    srv.data_dir.parent.mkdir(parents=True)
    later = threading.Timer(2.0, srv.start)
    s = settings.replace(uri=srv.uri, retries=6, retry_backoff=0.5)  # waits up to 31.5 s
    later.start()
    try:
        with caplog.at_level(logging.WARNING, logger="search.store"):
            store = MilvusStore(s)
            assert store.exists("nothing") is False
        assert "cannot connect to Milvus" in caplog.text and "retry 1 in 0.5s" in caplog.text
        assert "retry 6 " not in caplog.text  # it got through before the retries ran out
    finally:
        later.join()
        srv.kill()
