"""Shared assertions and process helpers of the reliability tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from indexer.catalog import load_catalog
from indexer.hashing import content_hash, meta_hash
from search.config import Settings
from search.store import MilvusStore

REPO = Path(__file__).resolve().parents[2]


def stored_rows(store: MilvusStore, physical: str) -> list[dict[str, Any]]:
    """Every row of a collection, straight from Milvus (duplicates included)."""
    store.ensure_loaded(physical)
    it = store.client.query_iterator(
        physical,
        batch_size=1000,
        filter="",
        output_fields=["id", "content_hash", "meta_hash", "image", "metadata", "vector"],
    )
    out: list[dict[str, Any]] = []
    try:
        while batch := it.next():
            out.extend(dict(r) for r in batch)
    finally:
        it.close()
    return out


def assert_collection_equals_catalog(
    settings: Settings, manifest: Path, embedder: Any, store: MilvusStore | None = None
) -> None:
    """The live collection holds exactly the catalog: ids, hashes, vectors, no duplicates."""
    catalog = load_catalog(manifest, numeric_columns=settings.indexing.numeric_columns)
    assert not catalog.errors
    store = store or MilvusStore(settings)
    physical = store.require(settings.store.collection)
    rows = stored_rows(store, physical)
    counts = Counter(r["id"] for r in rows)
    dupes = {i: n for i, n in counts.items() if n > 1}
    assert not dupes, f"duplicate rows: {dupes}"
    expected = {item.id: item for item in catalog.items}
    assert set(counts) == set(expected), (
        f"missing {sorted(set(expected) - set(counts))}, extra {sorted(set(counts) - set(expected))}"
    )
    assert store.count(physical) == len(expected)
    by_id = {r["id"]: r for r in rows}
    for item_id, item in expected.items():
        row = by_id[item_id]
        assert row["content_hash"] == content_hash(Path(item.image).read_bytes()), item_id
        assert row["meta_hash"] == meta_hash(item.image, item.metadata), item_id
        assert row["image"] == item.image
        assert row["metadata"] == item.metadata
    # The vectors are the embeddings of the current images (not a stale one under a new hash).
    ids = sorted(expected)
    fresh = embedder.embed_images([expected[i].image for i in ids])
    stored = np.asarray([by_id[i]["vector"] for i in ids], np.float32)
    cosines = (fresh * stored).sum(axis=1)
    assert cosines.min() > 0.999, dict(zip(ids, cosines.round(4).tolist(), strict=True))


def vsearch_env(settings: Settings, **extra: str) -> dict[str, str]:
    """Environment that makes a ``vsearch`` subprocess use ``settings``."""
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        PYTHONPATH=str(REPO),
        VSEARCH_URI=settings.store.uri,
        VSEARCH_CACHE_DIR=settings.model.cache_dir,
        VSEARCH_LOCK_DIR=settings.store.lock_dir,
        VSEARCH_DEVICE="cpu",
        VSEARCH_WORKERS=str(max(0, settings.indexing.workers)),
        VSEARCH_THREADS=str(settings.indexing.threads or 2),
        VSEARCH_BATCH_SIZE=str(settings.indexing.batch_size or 2),
        VSEARCH_RETRIES=str(settings.store.retries),
        VSEARCH_RETRY_BACKOFF=str(settings.store.retry_backoff),
        VSEARCH_COLLECTION=settings.store.collection,
    )
    env.update(extra)
    return env


def vsearch_here(
    settings: Settings, monkeypatch: Any, capsys: Any, *args: str
) -> tuple[int, str, str]:
    """Run ``vsearch ARGS`` in this process (where the subprocess itself is not under test):
    the same settings through the same variables; returns (exit code, stdout, stderr)."""
    from cli.main import main

    for key, value in vsearch_env(settings).items():
        if key.startswith("VSEARCH_"):
            monkeypatch.setenv(key, value)
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def run_vsearch(
    settings: Settings, *args: str, crash: tuple[str, int] | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """Run ``vsearch ARGS`` in a subprocess (through the crash wrapper when ``crash`` is set)."""
    if crash:
        cmd = [sys.executable, "-m", "tests.reliability.crash_entry", crash[0], str(crash[1]), "--"]
    else:
        cmd = [sys.executable, "-m", "cli.main"]
    return subprocess.run(
        [*cmd, *args],
        env=vsearch_env(settings),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def kill_index_when(
    settings: Settings, manifest: Path, line: str, before_kill: Any = None
) -> tuple[int | None, Any]:
    """Run ``vsearch index MANIFEST`` in a subprocess and SIGKILL it once its log shows
    ``line`` (after ``before_kill(proc)``, whose result is returned with the exit code)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "index", str(manifest)],
        env=vsearch_env(settings),
        cwd=REPO,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    seen = None
    try:
        assert proc.stderr is not None
        for text in proc.stderr:
            if line in text:
                seen = before_kill(proc) if before_kill else None
                proc.send_signal(signal.SIGKILL)
                break
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    return proc.returncode, seen
