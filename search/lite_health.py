"""Damage to an embedded (Milvus Lite) store is detected and named, never read as "empty".

Milvus Lite keeps each collection as ``collections/NAME/manifest.json`` plus the Parquet
segment files that manifest lists. A segment file removed (or truncated) made the
collection read as empty, or printed a milvus_lite traceback; here, before a collection is
first loaded, every segment its manifest lists must exist and its Parquet footer must
read. A failure raises :class:`~search.errors.StoreError` with the repair command.

Opening the database is watched too (:func:`capture_lite_open`): milvus_lite logs the real
reason (another process holds the lock, a corrupted manifest) with a traceback and hands
pymilvus only "Open local milvus failed"; the record is captured, kept for ``-v`` (DEBUG)
and turned into one line.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .errors import StoreError

log = logging.getLogger(__name__)
LITE_LOGGER = "milvus_lite.server_manager"


def unreachable_port(exc: BaseException | None) -> int | None:
    """The port pymilvus could not get through to ("Fail connecting to server on HOST:PORT":
    its first call on a channel failed, whatever the error), or None for any other failure."""
    found = re.search(r"Fail connecting to server on [^\s,]*:(\d+)", str(exc or ""))
    return int(found.group(1)) if found else None


def revive_lite_server(uri: str, *, failed_port: int | None = None) -> bool:
    """Stop this process's Lite server for ``uri`` when it no longer serves; True when one
    was stopped (the next client starts a fresh one).

    milvus_lite keeps one in-process gRPC server per database for the life of the process
    and hands every new client its port. In a few full test runs one such server, still
    registered, served nothing ("Fail connecting to server on 127.0.0.1:PORT"; cause not
    found: stopping the gRPC server by hand gives exactly that), and every later open of
    that database failed the same way, in one run with the port still accepting connections.

    ``failed_port``: a client of ours could not get through at that port. It is the
    registered server's: that server is stopped. It is another (an older server, already
    replaced by another client): the registered one is left alone. Without it (before an
    open), the registered server is stopped if no HTTP/2 server (gRPC's transport) answers
    at its port: once stopped, its port may be another program's, and a client would wait
    its whole timeout there.
    """
    try:
        from milvus_lite.server_manager import server_manager_instance as manager
    except ImportError:
        return False
    path = os.path.abspath(uri)
    entry = getattr(manager, "_servers", {}).get(path)  # (server, db, port); private
    if entry is None:
        return False
    port = int(entry[2])
    if (port != failed_port) if failed_port is not None else _speaks_grpc(port):
        return False
    log.warning("Milvus Lite's server for %s stopped answering: starting it again", uri)
    manager.release_server(path)
    return True


_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


def _speaks_grpc(port: int, timeout: float = 2.0) -> bool:
    """Whether an HTTP/2 server (gRPC's transport) answers at 127.0.0.1:``port``: the client
    preface and an empty SETTINGS frame sent, the server's SETTINGS frame (type 4) comes back.
    About a millisecond when it does (a gRPC channel took ~200 ms to say so)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(_HTTP2_PREFACE)
            header = b""
            while len(header) < 9:
                chunk = sock.recv(9 - len(header))
                if not chunk:
                    return False
                header += chunk
    except OSError:  # refused, reset, timed out
        return False
    return header[3] == 4


def repair_hint(uri: str) -> str:
    """The repair command for a damaged Lite database (rebuild it from the catalog)."""
    return (
        f"repair: move it aside and rebuild it from the catalog "
        f"(mv {uri} {uri}.damaged && vsearch index CATALOG --uri {uri})"
    )


@dataclass
class LiteOpenFailure:
    """What milvus_lite logged while failing to open a database (empty when it did not)."""

    error: BaseException | None = None

    @property
    def locked(self) -> bool:
        return type(self.error).__name__ == "DataDirLockedError"

    def describe(self) -> str:
        if self.error is None:
            return "unknown reason"
        text = str(self.error).strip().splitlines()
        return f"{type(self.error).__name__}: {text[0][:200] if text else ''}".rstrip(": ")


class _Capture(logging.Handler):
    def __init__(self, failure: LiteOpenFailure) -> None:
        super().__init__(logging.DEBUG)
        self.failure = failure

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            self.failure.error = record.exc_info[1]
        log.debug("milvus_lite: %s", record.getMessage(), exc_info=record.exc_info)


@contextmanager
def capture_lite_open() -> Iterator[LiteOpenFailure]:
    """Catch milvus_lite's failure record while opening (its traceback goes to DEBUG only)."""
    failure = LiteOpenFailure()
    logger = logging.getLogger(LITE_LOGGER)
    handler = _Capture(failure)
    saved = logger.propagate, logger.level
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    try:
        yield failure
    finally:
        logger.removeHandler(handler)
        logger.propagate = saved[0]
        logger.setLevel(saved[1])  # not .level =: setLevel clears logging's cache


def check_lite_collection(uri: str, name: str) -> None:
    """Raise StoreError when the collection's segment files do not match its manifest."""
    root = Path(uri).expanduser().resolve()
    folder = root / "collections" / name
    manifest_path = folder / "manifest.json"
    if not manifest_path.exists():
        return  # an alias, another database, or a layout this check does not know
    try:
        manifest = json.loads(manifest_path.read_text())
        partitions = manifest.get("partitions") or {}
        listed = [
            (folder / "partitions" / part / rel)
            for part, spec in partitions.items()
            for rel in (spec or {}).get("data_files") or []
        ]
    except (OSError, ValueError, AttributeError) as exc:
        raise StoreError(
            f"the Milvus Lite database {uri} is damaged: collection {name!r} has an unreadable "
            f"manifest ({type(exc).__name__}); {repair_hint(uri)}"
        ) from exc
    problems = [p for p in (_segment_problem(path) for path in listed) if p]
    if problems:
        raise StoreError(
            f"the Milvus Lite database {uri} is damaged: collection {name!r} "
            f"{problems[0]}{f' (and {len(problems) - 1} more)' if len(problems) > 1 else ''}; "
            f"{repair_hint(uri)}"
        )


def check_lite_store(uri: str) -> None:
    """:func:`check_lite_collection` for every collection of a Lite database."""
    root = Path(uri).expanduser().resolve() / "collections"
    if root.is_dir():
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            check_lite_collection(uri, folder.name)


def _segment_problem(path: Path) -> str:
    """'' when a Parquet segment exists and its footer reads, else what is wrong with it."""
    rel = "/".join(path.parts[-3:])
    if not path.exists():
        return f"lists the segment {rel}, which is missing"
    try:
        import pyarrow.parquet as pq

        pq.read_metadata(path)
    except Exception as exc:  # noqa: BLE001 - any unreadable footer is damage
        return f"has an unreadable segment {rel} ({type(exc).__name__})"
    return ""
