"""An advisory lock so two indexing runs never write the same collection at once."""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
from pathlib import Path
from types import TracebackType

from search.config import Settings
from search.errors import LockHeldError


def lock_path(settings: Settings) -> Path:
    """Where the lock for ``settings.collection`` on ``settings.uri`` lives."""
    if settings.lock_dir:
        base = Path(settings.lock_dir)
    elif settings.is_lite:
        base = Path(settings.uri).expanduser().resolve().parent
    else:
        base = Path(settings.cache_dir) / "locks"
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{settings.uri}-{settings.collection}")[-80:]
    digest = hashlib.sha256(f"{settings.uri}|{settings.collection}".encode()).hexdigest()[:8]
    return base / f".vsearch-{slug}-{digest}.lock"


class IndexLock:
    """``with IndexLock(settings):`` holds an exclusive, non-blocking ``flock``.

    The kernel releases it when the process dies (even by SIGKILL), so a crashed run never
    leaves a stale lock behind.
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
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
