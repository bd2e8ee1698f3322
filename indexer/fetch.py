"""Reading an item's image bytes: local files, and http(s) URLs (through the downloader)."""

from __future__ import annotations

import errno
import logging
import os
import stat

from search.errors import ImageError

from .download import MAX_DOWNLOAD_BYTES, DownloadPolicy, download_bytes

log = logging.getLogger(__name__)


def read_image_bytes(
    ref: str,
    *,
    timeout: float = 20.0,
    max_bytes: int = MAX_DOWNLOAD_BYTES,
    allow_private: bool = False,
) -> bytes:
    """The raw bytes of an image reference (a path or an http(s) URL), or ImageError.

    URLs go through :mod:`indexer.download` (deadlines, SSRF guard, body checks);
    ``timeout`` is its read timeout, ``allow_private`` lets it reach private hosts.
    """
    if ref.startswith(("http://", "https://")):
        policy = DownloadPolicy(
            read_timeout=timeout, max_bytes=max_bytes, allow_private=allow_private
        )
        return download_bytes(ref, policy)
    try:
        data = _read_regular_file(ref, max_bytes + 1)
    except FileNotFoundError:
        raise ImageError("file vanished (not found)") from None
    except PermissionError:
        raise ImageError("permission denied") from None
    except IsADirectoryError:
        raise ImageError("is a directory") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ImageError("symlink loop") from None
        raise ImageError(f"cannot read file: {exc.strerror or exc}") from None
    except ValueError as exc:  # e.g. an embedded NUL byte in the path
        raise ImageError(f"invalid path: {exc}") from None
    if len(data) > max_bytes:
        raise ImageError(f"file larger than {max_bytes:,} bytes")
    return data


def _read_regular_file(path: str, limit: int) -> bytes:
    """Read at most ``limit`` bytes of a regular file; refuse FIFOs, sockets and devices.

    Opened non-blocking so a FIFO named like an image cannot hang the run (a plain open
    would wait forever for a writer); fstat on the open descriptor decides.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            if stat.S_ISDIR(os.fstat(fd).st_mode):
                raise IsADirectoryError(errno.EISDIR, "is a directory", path)
            raise ImageError("not a regular file (FIFO, socket or device)")
        return fh.read(limit)
