"""Subprocess entry point for the crash tests: ``vsearch`` with a SIGKILL planted at one point.

Usage: ``python -m tests.reliability.crash_entry POINT NTH -- <vsearch arguments>``.
The library is not changed: this wrapper patches one store method so that the process kills
itself with SIGKILL (no cleanup, no ``finally``, no atexit: what ``kill -9`` or the OOM killer
does) the NTH time that method runs. Points:

- ``create``: right after the collection was created, before any row is written.
- ``upsert``: in the middle of the NTH upsert (half of its rows written, then killed).
- ``retag``: after reading stored vectors for a re-tag, before writing them back.
- ``delete``: in the middle of the deletions (half of the ids deleted, then killed).
- ``flush``: just before the final flush (rows written but not flushed).
- ``alias``: just before the first build's alias is created.
- ``count``: after the flush, while the run reads its final count.
- ``killpid:PID``: the NTH upsert first SIGKILLs process PID (a Milvus server), then runs.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any


def _die() -> None:
    sys.stderr.write("crash_entry: SIGKILL now\n")
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def plant(point: str, nth: int) -> None:
    from indexer.pipeline import _Writer
    from search.store import MilvusStore

    # One upsert request per batch, so that the NTH upsert falls in the middle of a run on
    # the tests' small catalogs (the writer's default waits for 64 rows: one request there).
    _Writer.min_rows = 1
    calls = {"n": 0}

    def hit() -> bool:
        calls["n"] += 1
        return calls["n"] == nth

    if point == "create":
        orig_create = MilvusStore.create

        def create(self: MilvusStore, name: str, model: Any) -> None:
            orig_create(self, name, model)
            if hit():
                _die()

        MilvusStore.create = create  # type: ignore[method-assign]
    elif point == "upsert":
        orig_upsert = MilvusStore.upsert

        def upsert(self: MilvusStore, name: str, rows: Any) -> int:
            if hit():
                orig_upsert(self, name, list(rows)[: max(1, len(rows) // 2)])
                _die()
            return orig_upsert(self, name, rows)

        MilvusStore.upsert = upsert  # type: ignore[method-assign]
    elif point == "retag":
        orig_get = MilvusStore.get

        def get(self: MilvusStore, name: str, ids: Any, *, vectors: bool = False) -> Any:
            rows = orig_get(self, name, ids, vectors=vectors)
            if vectors and hit():
                _die()
            return rows

        MilvusStore.get = get  # type: ignore[method-assign]
    elif point == "delete":
        orig_delete = MilvusStore.delete

        def delete(self: MilvusStore, name: str, ids: Any) -> int:
            ids = list(ids)
            if hit():
                orig_delete(self, name, ids[: max(1, len(ids) // 2)])
                _die()
            return orig_delete(self, name, ids)

        MilvusStore.delete = delete  # type: ignore[method-assign]
    elif point in ("flush", "alias", "count"):
        method = {"flush": "flush", "alias": "set_alias", "count": "count"}[point]
        orig = getattr(MilvusStore, method)
        after_flush = {"done": False}

        def wrapper(self: MilvusStore, *args: Any, **kwargs: Any) -> Any:
            if (point != "count" or after_flush["done"]) and hit():
                _die()
            return orig(self, *args, **kwargs)

        if point == "count":
            orig_flush = MilvusStore.flush

            def flush(self: MilvusStore, name: str) -> None:
                orig_flush(self, name)
                after_flush["done"] = True

            MilvusStore.flush = flush  # type: ignore[method-assign]
        setattr(MilvusStore, method, wrapper)
    elif point.startswith("killpid:"):  # the store dies instead: SIGKILL another process
        victim = int(point.split(":", 1)[1])
        orig_up = MilvusStore.upsert

        def upsert_then_lose_server(self: MilvusStore, name: str, rows: Any) -> int:
            if hit():
                sys.stderr.write(f"crash_entry: SIGKILL server pid {victim}\n")
                os.kill(victim, signal.SIGKILL)
                time.sleep(0.5)
            return orig_up(self, name, rows)

        MilvusStore.upsert = upsert_then_lose_server  # type: ignore[method-assign]
    else:
        raise SystemExit(f"unknown crash point {point!r}")


def main(argv: list[str]) -> int:
    point, nth, sep, *rest = argv
    if sep != "--":
        raise SystemExit("usage: crash_entry POINT NTH -- VSEARCH-ARGS")
    plant(point, int(nth))
    from cli.main import main as vsearch_main

    return vsearch_main(rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
