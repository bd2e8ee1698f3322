"""Milvus Lite's server mode: one process owns the ``.db``, every other process connects.

Milvus Lite lets one process open a database. To run a cron indexer next to a live UI on one
machine, run this server in the foreground (systemd, a terminal) and point every process at
``http://HOST:PORT`` (``VSEARCH_URI``). SIGTERM (``systemctl stop``, ``docker stop``) takes
the same graceful path as Ctrl-C: in-flight requests drain and the database closes cleanly.
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from types import FrameType

from search.errors import StoreError, StoreLockedError

log = logging.getLogger(__name__)
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 19541


def lite_uri(host: str, port: int) -> str:
    """The URI clients use to reach the server (0.0.0.0 is reached via 127.0.0.1)."""
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '::', '') else host}:{port}"


def run_lite_server(
    data_dir: str | Path,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    max_workers: int = 10,
) -> None:
    """Serve the Lite database at ``data_dir`` on ``host:port`` until interrupted."""
    from milvus_lite import DataDirLockedError
    from milvus_lite.adapter.grpc.server import run_server

    path = Path(data_dir).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    log.info("Milvus Lite server for %s on %s", path, lite_uri(host, port))
    try:
        run_server(data_dir=str(path), host=host, port=port, max_workers=max_workers)
    except DataDirLockedError as exc:
        raise StoreLockedError(
            f"{path} is open in another process (a running indexer, UI or server); stop it "
            "first: the Lite server must be the only process that opens the database"
        ) from exc
    except RuntimeError as exc:  # grpc: the port cannot be bound
        raise StoreError(f"cannot listen on {host}:{port}: {exc} (port in use?)") from exc
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt
