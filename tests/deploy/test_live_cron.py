"""Cron next to a live UI on one machine: `vsearch milvus-server` shares one Lite database.

An indexing job (a subprocess, as cron would run it) adds products while shoppers search the
live HTTP API of `vsearch serve` (another subprocess) without pause: no search may fail, and
the new products are searchable when the job ends.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from indexer.pipeline import run_index
from search.config import Settings
from search.errors import StoreLockedError
from search.store import MilvusStore
from tests.helpers import free_port, photo, port_taken, product_catalog

VSEARCH = str(Path(sys.executable).with_name("vsearch"))
pytestmark = pytest.mark.slow


def env_for(cache_dir: Path, uri: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VSEARCH_")}
    env.update(
        HF_HUB_OFFLINE="1",
        GRADIO_ANALYTICS_ENABLED="False",
        NO_PROXY="127.0.0.1,localhost",
        VSEARCH_URI=uri,
        VSEARCH_CACHE_DIR=str(cache_dir),
        VSEARCH_DEVICE="cpu",
        VSEARCH_WORKERS="0",
        VSEARCH_THREADS="1",
    )
    return env


def stop(proc: subprocess.Popen) -> None:
    """Stop a process we started, by its PID (SIGTERM, then SIGKILL)."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def wait_for(check, what: str, proc: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited {proc.returncode}: {log.read_text()[-3000:]}")
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.5)
    raise TimeoutError(f"{what} not ready in {timeout}s: {log.read_text()[-3000:]}")


@contextlib.contextmanager
def background(cmd: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            stop(proc)


@contextlib.contextmanager
def on_free_port(
    cmd_for: Callable[[int], list[str]],
    ready: Callable[[int], object],
    what: str,
    env: dict[str, str],
    log: Path,
) -> Iterator[tuple[subprocess.Popen, int]]:
    """A server started on a free 127.0.0.1 port, once ``ready(port)``; stopped by PID.

    free_port() closes its socket before the server binds, and in the seconds a server takes
    to start another process can take that port: then it is started again on a new one.
    """
    for attempt in range(3):
        port = free_port()
        with background(cmd_for(port), env, log) as proc:
            try:
                wait_for(functools.partial(ready, port), what, proc, log)
            except RuntimeError:
                if attempt < 2 and port_taken(log.read_text()):
                    continue
                raise
            yield proc, port
            return
    raise AssertionError("unreachable: the last attempt yields or raises")


def lite_answers(port: int) -> bool:
    """Milvus answers on the port (a port that only accepts connections may be another
    program's, taken before our server could bind it)."""
    from pymilvus import MilvusClient

    client = MilvusClient(uri=f"http://127.0.0.1:{port}", timeout=2)
    try:
        client.list_collections()
    finally:
        client.close()
    return True


def jpeg_bytes(name: str) -> bytes:
    buf = io.BytesIO()
    photo(name).save(buf, "JPEG")
    return buf.getvalue()


def test_cron_indexing_next_to_live_api(tmp_path: Path, cache_dir: Path, embedder) -> None:
    db = tmp_path / "data" / "vsearch.db"
    catalog = product_catalog(tmp_path / "cat", ["chelsea", "coffee", "rocket"], per_product=2)
    lite_log, serve_log = tmp_path / "lite.log", tmp_path / "serve.log"
    with on_free_port(
        lambda port: [VSEARCH, "milvus-server", "--data-dir", str(db), "--port", str(port)],
        lite_answers,
        "lite",
        env_for(cache_dir, str(db)),
        lite_log,
    ) as (lite, lite_port):
        uri = f"http://127.0.0.1:{lite_port}"
        env = env_for(cache_dir, uri)
        # the database is owned by the server: opening it directly says what to do
        with pytest.raises(StoreLockedError, match="set VSEARCH_URI"):
            MilvusStore(Settings.of(uri=str(db), retries=0)).exists("catalog")
        # the first build in this process: the job under test is the second one, below
        settings = Settings.of(
            uri=uri, cache_dir=str(cache_dir), lock_dir=str(tmp_path / "locks"), device="cpu"
        )
        first = run_index(catalog, settings, embedder=embedder)
        assert first.ok and first.added == 6

        with on_free_port(
            lambda port: [VSEARCH, "serve", "--host", "127.0.0.1", "--port", str(port)],
            lambda port: httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200,
            "serve",
            env,
            serve_log,
        ) as (_ui, api_port):
            api = f"http://127.0.0.1:{api_port}"
            # cron adds two products while shoppers keep searching
            product_catalog(
                tmp_path / "cat",
                ["chelsea", "coffee", "rocket", "astronaut", "brick"],
                per_product=2,
            )
            job = subprocess.Popen(
                [VSEARCH, "-q", "index", str(catalog), "--json"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            results: list[str] = []
            query = jpeg_bytes("coffee")
            with httpx.Client(base_url=api, timeout=60) as client:
                while job.poll() is None or len(results) < 6:
                    try:
                        by_id = client.post("/api/search/id", json={"id": "coffee-0", "limit": 3})
                        by_photo = client.post(
                            "/api/search/image",
                            files={"image": ("q.jpg", query, "image/jpeg")},
                            data={"limit": "3"},
                        )
                        ok = by_id.status_code == by_photo.status_code == 200
                        top = by_id.json()["matches"][0]["id"] if ok else ""
                        photo_top = by_photo.json()["matches"][0]["id"] if ok else ""
                        results.append(
                            "ok"
                            if (top, photo_top) == ("coffee-1", "coffee-0")
                            else f"bad {by_id.status_code} {by_photo.status_code} {top} {photo_top}"
                        )
                    except httpx.HTTPError as exc:
                        results.append(f"error {exc!r}")
                out, err = job.communicate(timeout=300)
                assert job.returncode == 0, err[-2000:]
                summary = json.loads(out)
                assert (summary["added"], summary["unchanged"], summary["count"]) == (4, 6, 10)
                assert [r for r in results if r != "ok"] == []
                new = client.post("/api/search/id", json={"id": "astronaut-0", "limit": 1})
                assert new.status_code == 200 and new.json()["matches"][0]["id"] == "astronaut-1"
                assert client.get("/api/item", params={"id": "brick-1"}).status_code == 200
    assert lite.returncode == 0  # SIGTERM: graceful shutdown
