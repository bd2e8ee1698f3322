"""The store module on Milvus Lite: provenance, chunked upserts, the one-process lock."""

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from search.config import Settings
from search.embedder import ModelInfo
from search.errors import ProvenanceMismatch, StoreLockedError
from search.store import MilvusStore, _chunks_by_bytes, _row_bytes

MODEL = ModelInfo("test-model", "tag", "abc123", 8, False, 224, {"mean": [0.5] * 3})


def _rows(n: int, dim: int = 8) -> list[dict]:
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(n, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    return [
        {
            "id": f"item-{i}",
            "vector": v.tolist(),
            "image": f"/img/{i}.jpg",
            "content_hash": f"h{i}",
            "meta_hash": "m",
            "source_sig": "s",
            "metadata": {"n": i},
        }
        for i, v in enumerate(vecs)
    ]


def test_collection_records_provenance_and_refuses_other_models(settings) -> None:
    store = MilvusStore(settings)
    store.create("c1", MODEL)
    assert store.provenance("c1") == MODEL
    store.check_model("c1", MODEL)
    other = ModelInfo("test-model", "tag", "different", 8, False, 224)
    with pytest.raises(ProvenanceMismatch, match="was built with model test-model"):
        store.check_model("c1", other)


def test_upserts_are_chunked_and_idempotent(settings) -> None:
    store = MilvusStore(settings.replace(upsert_bytes=4096))
    store.create("c1", MODEL)
    rows = _rows(120)
    chunks = list(_chunks_by_bytes(rows, 4096))
    assert len(chunks) > 2 and sum(map(len, chunks)) == 120
    assert all(sum(_row_bytes(r) for r in c) <= 4096 for c in chunks)
    assert store.upsert("c1", rows) == 120
    store.upsert("c1", rows[:50])  # the same ids again: no duplicates
    store.flush("c1")
    assert store.count("c1") == 120
    prints = store.fingerprints("c1")
    assert len(prints) == 120 and prints["item-7"].content_hash == "h7"
    assert store.delete("c1", [f"item-{i}" for i in range(10)]) == 10
    assert store.count("c1") == 110
    hits = store.search("c1", np.asarray([rows[42]["vector"]]), limit=3)[0]
    assert hits[0].id == "item-42" and hits[0].score == pytest.approx(1.0, abs=1e-4)
    assert hits[0].metadata == {"n": 42} and hits[0].image == "/img/42.jpg"


def test_alias_switch_and_listing(settings) -> None:
    store = MilvusStore(settings)
    store.create("v1", MODEL)
    store.create("v2", MODEL)
    store.set_alias("shop", "v1")
    assert store.resolve("shop") == "v1"
    store.set_alias("shop", "v2")
    assert store.resolve("shop") == "v2" and store.aliases("v2") == ("shop",)
    listed = {c.name: c for c in store.collections()}
    assert set(listed) == {"v1", "v2"} and listed["v2"].model == MODEL
    assert store.resolve("nothing") is None


def test_resolving_a_name_that_is_no_alias_logs_nothing(settings) -> None:
    """A library user's first run (no alias yet) must not get pymilvus's ERROR traceback for
    the describe_alias that resolve() asks with; other failed calls are still logged."""
    import logging

    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    rpc_log = logging.getLogger("pymilvus.decorators")
    handler, level = Keep(logging.ERROR), rpc_log.level
    rpc_log.addHandler(handler)
    rpc_log.setLevel(logging.ERROR)  # an in-process CLI test may have silenced pymilvus
    try:
        store = MilvusStore(settings)
        store.create("v1", MODEL)
        assert store.resolve("v1") == "v1" and store.resolve("nothing") is None
        assert [r.getMessage()[:80] for r in records] == []
        from pymilvus.exceptions import MilvusException

        with pytest.raises(MilvusException):  # another failed call: logged as before
            store.client.describe_collection("nothing")
        assert any("describe_collection" in r.getMessage() for r in records)
    finally:
        rpc_log.removeHandler(handler)
        rpc_log.setLevel(level)


def test_lite_database_held_by_another_process_says_what_to_do(settings) -> None:
    Path(settings.store.uri).parent.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom pymilvus import MilvusClient\n"
            f"MilvusClient({settings.store.uri!r}).list_collections()\nprint('ready', flush=True)\ntime.sleep(120)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(StoreLockedError, match="milvus-server"):
            MilvusStore(settings).client.list_collections()
    finally:
        holder.kill()
        holder.wait(timeout=30)
    time.sleep(0.5)
    assert MilvusStore(settings).client.list_collections() == []


def test_ids_with_quotes_backslashes_and_unicode_round_trip(settings) -> None:
    store = MilvusStore(settings)
    store.create("c1", MODEL)
    rows = _rows(4)
    odd = ["café/photo é.jpg", 'say "cheese".jpg', "back\\slash.jpg", "it's.jpg"]
    for row, new_id in zip(rows, odd, strict=True):
        row["id"] = new_id
    store.upsert("c1", rows)
    assert [r["id"] for r in store.get("c1", odd)] == odd
    assert store.delete("c1", odd[:3]) == 3
    assert set(store.fingerprints("c1")) == {"it's.jpg"}


def test_search_consistency_is_validated_and_read_from_the_environment() -> None:
    from search.errors import ConfigError

    assert Settings().store.search_consistency == "Strong"
    env = {"VSEARCH_SEARCH_CONSISTENCY": "Bounded"}
    assert Settings.from_env(env).store.search_consistency == "Bounded"
    with pytest.raises(ConfigError, match="search_consistency"):
        Settings.of(search_consistency="eventual-ish")


@pytest.mark.parametrize("damage", ["segment-removed", "segment-truncated", "collections-removed"])
def test_a_damaged_lite_store_is_reported_with_the_repair_command(
    settings, tmp_path: Path, damage: str
) -> None:
    """A lost or cut segment file used to read as an empty catalog ("no item")."""
    import shutil

    from search.errors import StoreError

    store = MilvusStore(settings)
    store.create("v1", MODEL)
    store.upsert("v1", _rows(50))
    store.flush("v1")
    store.set_alias("shop", "v1")
    copy = tmp_path / "copy.db"  # a copy carries no lock: another store can open it here
    shutil.copytree(settings.store.uri, copy, ignore=shutil.ignore_patterns("LOCK"))
    segments = sorted((copy / "collections" / "v1").rglob("*.parquet"))
    assert segments
    if damage == "segment-removed":
        segments[0].unlink()
    elif damage == "segment-truncated":
        with segments[0].open("r+b") as fh:
            fh.truncate(segments[0].stat().st_size // 2)
    else:
        shutil.rmtree(copy / "collections")
    damaged = MilvusStore(settings.replace(uri=str(copy)))
    with pytest.raises(StoreError) as info:
        damaged.count(damaged.require("shop"))
    message = str(info.value)
    assert "vsearch index CATALOG" in message and f"mv {copy} {copy}.damaged" in message, message
    assert "Traceback" not in message and len(message.splitlines()) == 1
    assert MilvusStore(settings).count("v1") == 50  # the original is untouched


def test_retries_are_decided_by_error_type_and_code_not_by_words() -> None:
    import grpc
    from pymilvus.exceptions import MilvusException

    from search.retry import transient

    class Rpc(grpc.RpcError):
        def __init__(self, code: grpc.StatusCode) -> None:
            self._code = code

        def code(self) -> grpc.StatusCode:
            return self._code

    assert transient(Rpc(grpc.StatusCode.UNAVAILABLE))
    assert transient(MilvusException(2, "Fail connecting to server"))  # CONNECT_FAILED
    assert transient(MilvusException(65535, "whatever", retriable=True))
    assert transient(ConnectionResetError())
    assert not transient(Rpc(grpc.StatusCode.INVALID_ARGUMENT))
    # words alone decide nothing: an input error that mentions a timeout is not retried
    assert not transient(MilvusException(6, "unexpected token 'timeout'", is_input_error=True))
    assert not transient(MilvusException(1100, "connection refused in a filter value"))
    assert not transient(ValueError("server unavailable"))


def test_bounded_retries_then_one_store_error(settings, caplog) -> None:
    from pymilvus.exceptions import MilvusException

    from search.errors import StoreError

    calls = []

    def flaky() -> None:
        calls.append(1)
        raise MilvusException(2, "Fail connecting to server on 127.0.0.1:1")

    store = MilvusStore(settings.replace(retries=2, retry_backoff=0.01))
    with pytest.raises(StoreError, match="Milvus search failed: .*Fail connecting"):
        store._call("search", flaky)
    assert len(calls) == 3 and "retry 2 in 0.0s" in caplog.text
    calls.clear()

    def wrong() -> None:
        calls.append(1)
        raise MilvusException(6, "bad expression")

    with pytest.raises(StoreError, match="bad expression"):
        store._call("search", wrong)
    assert len(calls) == 1  # not transient: never retried


def _lite_server(settings) -> tuple[object, int]:
    """milvus_lite's registered in-process server for this test's database: (server, port),
    looked up by the path the store opens (MilvusStore._lite_path) as the revival does."""
    import os

    from milvus_lite.server_manager import server_manager_instance as manager

    server, _db, port = manager._servers[os.path.abspath(MilvusStore(settings)._lite_path)]
    return server, port


def _rows_then_server_stopped(settings, rows: int) -> int:
    """``rows`` rows written and the store closed, then its in-process server stopped while
    still registered (the flake's state); returns the stopped server's port."""
    store = MilvusStore(settings)
    store.create("v1", MODEL)
    store.upsert("v1", _rows(rows))
    store.flush("v1")
    store.close()
    server, port = _lite_server(settings)
    server.stop(grace=0).wait(5)
    return port


def test_a_lite_server_that_stopped_answering_is_started_again(settings, caplog) -> None:
    """milvus_lite keeps one in-process server per database; in a few full test runs one
    stopped answering while still registered, and every later open of that database failed
    ("Fail connecting to server"). Stopping it by hand gives the same state."""
    first, second = MilvusStore(settings), MilvusStore(settings)
    first.create("v1", MODEL)
    first.upsert("v1", _rows(6))
    first.flush("v1")
    assert second.count("v1") == 6  # both clients on the server of this process
    server, port = _lite_server(settings)
    server.stop(grace=0)
    # an open client recovers on its next call: a new server, the same rows
    assert first.count("v1") == 6
    assert "stopped answering" in caplog.text
    assert _lite_server(settings)[1] != port
    # a second client, still on the old port, reconnects to the new server and leaves it be
    caplog.clear()
    assert second.count("v1") == 6
    assert "stopped answering" not in caplog.text
    assert first.count("v1") == 6  # the first one's server was not stopped by the second
    # and a store opened afterwards simply works
    assert MilvusStore(settings).count("v1") == 6


def test_a_stopped_lite_server_whose_port_another_program_took_is_started_again(
    settings, caplog
) -> None:
    """Once the server stopped, its port is free: another listener there accepts the TCP
    connection but speaks no gRPC (a fresh-clone run failed with the port accepting)."""
    import socket

    port = _rows_then_server_stopped(settings, 4)
    with socket.socket() as squatter:  # listens, never answers
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        assert MilvusStore(settings).count("v1") == 4
    assert "stopped answering" in caplog.text and _lite_server(settings)[1] != port


def test_a_lite_server_no_client_gets_through_to_is_started_again(settings, caplog) -> None:
    """A server at the registered port that speaks gRPC but fails every call (pymilvus:
    "Fail connecting to server") is replaced too when a new store opens the database."""
    from concurrent import futures

    import grpc

    class Refuse(grpc.GenericRpcHandler):
        def service(self, handler_call_details):
            def refuse(request, context):
                context.abort(grpc.StatusCode.UNAVAILABLE, "not serving")

            return grpc.unary_unary_rpc_method_handler(refuse)

    port = _rows_then_server_stopped(settings, 3)
    impostor = grpc.server(futures.ThreadPoolExecutor(max_workers=2), handlers=[Refuse()])
    assert impostor.add_insecure_port(f"127.0.0.1:{port}") == port
    impostor.start()
    try:
        assert MilvusStore(settings).count("v1") == 3
    finally:
        impostor.stop(grace=0)
    assert "stopped answering" in caplog.text and _lite_server(settings)[1] != port


def test_a_client_of_a_server_on_this_machine_does_not_ping_it_while_idle(
    settings, monkeypatch
) -> None:
    """pymilvus pings every 10 s with no call in flight; Milvus Lite's server (grpc's default
    policy) drops a connection idle for about a minute with GOAWAY "too_many_pings", and the
    next call waits for a reconnect. A client of the embedded Lite, or of a server on a
    loopback address (`vsearch milvus-server`), opens with those pings off (seen by hand: a
    client idle 150 s got the GOAWAY with pymilvus's options, none with these); a remote
    server keeps pymilvus's pings."""
    import pymilvus

    from search.store import LOCAL_GRPC_OPTIONS

    opened: list[dict] = []
    real = pymilvus.MilvusClient

    def recording(**kwargs: object) -> object:
        opened.append(kwargs)
        return real(**kwargs) if not str(kwargs["uri"]).startswith("http") else object()

    monkeypatch.setattr(pymilvus, "MilvusClient", recording)  # the store imports it on open
    store = MilvusStore(settings)
    try:
        assert store.collections() == []
    finally:
        store.close()
    options = opened[0]["grpc_options"]
    assert options["grpc.keepalive_permit_without_calls"] is False
    assert options["grpc.keepalive_time_ms"] >= 300_000  # the server's minimum interval
    for uri, local in [
        ("http://127.0.0.1:19541", True),
        ("http://localhost:19530", True),
        ("http://[::1]:19530", True),
        ("http://127.0.0.2:19530", True),
        ("http://10.0.0.5:19530", False),
        ("https://milvus.example.com:443", False),
    ]:
        MilvusStore(Settings.of(uri=uri)).client  # noqa: B018 (opens the client)
        assert opened[-1].get("grpc_options") == (LOCAL_GRPC_OPTIONS if local else None), uri
