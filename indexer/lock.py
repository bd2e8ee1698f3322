"""An advisory lock so two indexing runs never write the same collection at once.

The lock is keyed on the store's identity, not on how its URI is spelled:
``http://127.0.0.1:P``, ``http://localhost:P`` and ``grpc://[::1]:P`` are one server (the
host is resolved; every loopback address is one machine), and a Lite database is its real
path (symlinks and ``..`` resolved).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import os
import re
import socket
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

from search.config import Settings
from search.errors import LockHeldError


def lock_path(settings: Settings) -> Path:
    """Where the lock for ``settings.store.collection`` on ``settings.store.uri`` lives."""
    if settings.store.lock_dir:
        base = Path(settings.store.lock_dir)
    elif settings.store.is_lite:
        base = Path(settings.store.uri).expanduser().resolve().parent
    else:
        base = Path(settings.model.cache_dir) / "locks"
    identity = store_identity(settings.store.uri, is_lite=settings.store.is_lite)
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{identity}-{settings.store.collection}")[-80:]
    digest = hashlib.sha256(f"{identity}|{settings.store.collection}".encode()).hexdigest()[:8]
    return base / f".vsearch-{slug}-{digest}.lock"


DEFAULT_MILVUS_PORT = 19530


def store_identity(uri: str, *, is_lite: bool) -> str:
    """One name per store however its URI is written (see the module docstring)."""
    if is_lite:
        return "lite:" + str(Path(uri).expanduser().resolve())
    if uri.startswith("unix:"):
        return "unix:" + str(Path(uri[len("unix:") :]).resolve())
    parts = urlsplit(uri if "://" in uri else f"http://{uri}")
    try:
        port = parts.port or DEFAULT_MILVUS_PORT
    except ValueError:
        port = DEFAULT_MILVUS_PORT
    return f"milvus:{_canonical_host(parts.hostname or 'localhost')}:{port}"


def _canonical_host(host: str) -> str:
    """Loopback for any loopback name or address; else the lowest resolved address."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return host.lower()  # unresolvable: its spelling is all there is
    addresses = sorted({info[4][0] for info in infos})
    if not addresses:
        return host.lower()
    if all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses):
        return "loopback"
    return addresses[0]


_held: set[int] = set()  # descriptors of the locks this process holds


def _forget_in_child() -> None:
    """After a fork, in the child: close the inherited lock descriptors.

    A forked child (a decode worker) shares the parent's open file description, and with it
    the ``flock``; orphaned by a ``kill -9`` of the indexer it would hold the lock until it
    noticed. Closing its copy leaves the parent's lock as it is.
    """
    for fd in list(_held):
        with contextlib.suppress(OSError):
            os.close(fd)
    _held.clear()


os.register_at_fork(after_in_child=_forget_in_child)


class IndexLock:
    """``with IndexLock(settings):`` holds an exclusive, non-blocking ``flock``.

    The kernel releases it when the process dies (even by SIGKILL), so a crashed run never
    leaves a stale lock behind; forked children do not keep it (:func:`_forget_in_child`).
    """

    def __init__(self, settings: Settings) -> None:
        self.path = lock_path(settings)
        self._fd: int | None = None

    def __enter__(self) -> IndexLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise LockHeldError(
                f"another indexing run (pid {holder}) holds the lock {self.path}; "
                "wait for it to finish"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        _held.add(fd)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        fd, self._fd = self._fd, None
        if fd is None or fd not in _held:  # not held, or a forked child that closed its copy
            return
        _held.discard(fd)
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
