"""Pytest plugin: a real Milvus standalone server for the test session, and both backends.

``milvus_server`` starts the standalone server shipped in PyPI ``milvus==2.3.5`` (the
``server`` extra; installed with ``--no-deps`` next to pymilvus 3) in a temporary base dir,
waits for ``/healthz`` and a real gRPC round trip, and stops it by PID with SIGKILL at the end
of the session (the binary ignores SIGTERM for 20 s+). Set ``VSEARCH_TEST_MILVUS_URI`` to run
the same tests against a server you started yourself (e.g. the docker compose one).

``backend_settings`` is parametrized over ``lite`` (a fresh Lite database in tmp_path) and
``server`` (marked ``server``; a unique collection alias per test on the shared server, dropped
afterwards), so one integration test exercises both code paths of ``search.store``.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from search.config import Settings
from tests.helpers import lite_settings

ENV_EXTERNAL = "VSEARCH_TEST_MILVUS_URI"
START_TIMEOUT_S = 240
PORTS_FILE = "vsearch-ports.json"  # the ports a restart on the same base dir must reuse


@dataclass
class ServerHandle:
    """A running Milvus server: where to reach it and, when we started it, its PID."""

    uri: str
    pid: int | None = None
    base_dir: Path | None = None
    health_url: str = ""

    def stop(self) -> None:
        """SIGKILL by PID (Milvus 2.3 ignores SIGTERM); idempotent."""
        if self.pid is None:
            return
        pid, self.pid = self.pid, None
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, 0)


def start_milvus_server(
    base_dir: Path, *, session_ttl: int | None = None, attempts: int = 2
) -> ServerHandle:
    """Start ``milvus run standalone`` from the ``milvus`` wheel; wait until it answers.

    ``session_ttl`` (seconds, default 30) bounds how long a restart on the same ``base_dir``
    after a SIGKILL waits for the dead process's etcd session to expire. On a loaded machine
    a restart can panic while the old sessions linger (its proxy gives up waiting for the
    query coordinator): it is started again, up to ``attempts`` times.
    A restart must listen on the dead process's ports again; one of them may have been
    taken meanwhile as the local port of another process's outgoing connection (they are in
    the kernel's ephemeral range): the start is tried again a few seconds later. A first
    start (no ports recorded in ``base_dir`` yet) that fails starts over on new ports.
    """
    first = not (base_dir / PORTS_FILE).is_file()
    for attempt in range(1, attempts + 1):
        try:
            return _start_once(base_dir, session_ttl)
        except (ServerDied, PortTaken) as exc:
            if attempt == attempts:
                raise
            if first:  # nothing to keep: start over on new ports
                shutil.rmtree(base_dir, ignore_errors=True)
            time.sleep(5 if isinstance(exc, PortTaken) else 2)
    raise AssertionError("unreachable")


class ServerDied(RuntimeError):
    """The server process exited while starting."""


class PortTaken(RuntimeError):
    """A port the restarted server must reuse is held by another socket."""


MISSING_SERVER = (
    "the Milvus server wheel is not installed: run scripts/setup "
    "(or pip install --no-deps 'milvus==2.3.5'), or set " + ENV_EXTERNAL
)


def server_package_missing() -> bool:
    """True when ``milvus`` (the standalone server wheel) cannot be imported."""
    import importlib.util

    return importlib.util.find_spec("milvus") is None


def require_server_package() -> None:
    """Skip the calling test, with what to install, when the server wheel is missing."""
    if server_package_missing():
        pytest.skip(MISSING_SERVER)


def _start_once(base_dir: Path, session_ttl: int | None) -> ServerHandle:
    if server_package_missing():  # a benchmark calling outside pytest gets the same line
        raise RuntimeError(MISSING_SERVER)
    from milvus import MilvusServer, MilvusServerConfig

    config = MilvusServerConfig()
    ports_file = base_dir / PORTS_FILE
    if ports_file.is_file():
        # A restart: etcd's member data remembers its peer URL, and the dead process's
        # sessions (kept for their TTL) name each component's address: reuse every port.
        ports = json.loads(ports_file.read_text())
        etcd_client, etcd_peer = ports.pop("etcd_client"), ports.pop("etcd_peer")
    else:
        # Every port from the kernel's free ones, not MilvusServerConfig's scan up from the
        # defaults (19530, 53100, ...): two servers starting at once (the session's and the
        # restart test's, in two xdist workers) would both find the same defaults free and
        # the second binary to bind would die.
        keys = _component_ports(config)
        *free, etcd_client, etcd_peer = _free_ports(len(keys) + 2)
        ports = dict(zip(keys, free, strict=True))
        base_dir.mkdir(parents=True, exist_ok=True)
    config.update(**ports)
    config.try_bind_port = _bind_reusable  # a port of the killed process may be in TIME_WAIT
    server = MilvusServer(config, wait_for_started=False)
    server.webservice_port = _free_ports(1)[0]  # /healthz: start() scans up from it, not 9091
    server.set_base_dir(str(base_dir))
    if session_ttl is not None:
        server.config.set("common.session.ttl", session_ttl)
    # The embedded etcd listens on 2379/2380 unless given a config file: without this, a
    # second server on the machine (another test session, the restart test) cannot start.
    etcd_conf = base_dir / "embed-etcd.yaml"
    etcd_conf.write_text(_ETCD_CONF.format(client=etcd_client, peer=etcd_peer))
    # milvus reads these over its yaml (etcd.config.path, etcd.endpoints)
    env = {"ETCD_CONFIG_PATH": str(etcd_conf), "ETCD_ENDPOINTS": f"127.0.0.1:{etcd_client}"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # MilvusServer.start() copies os.environ for the child
    try:
        server.start()
    except RuntimeError as exc:
        if "bind failed" in str(exc):  # "set root_coord_port=53101, but bind failed"
            server.config.cleanup_listen_ports()  # the ports it did bind, free for the retry
            raise PortTaken(str(exc)) from exc
        raise
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    proc = server.server_proc
    chosen = {k: server.config.get(k) for k in _component_ports(server.config)}
    ports_file.write_text(
        json.dumps({**chosen, "etcd_client": etcd_client, "etcd_peer": etcd_peer})
    )
    handle = ServerHandle(
        uri=f"http://127.0.0.1:{server.listen_port}",
        pid=proc.pid,
        base_dir=base_dir,
        health_url=f"http://127.0.0.1:{server.webservice_port}/healthz",
    )
    server.server_proc = None  # we own the process now (its __del__ would SIGTERM it)
    atexit.register(handle.stop)  # even if the session dies before the fixture finalizer
    try:
        _wait_healthy(handle, proc)
    except BaseException:
        handle.stop()
        raise
    return handle


def _component_ports(config) -> list[str]:  # noqa: ANN001 - a MilvusServerConfig
    """The config's port settings, less etcd's: etcd reads its own file (``_ETCD_CONF``)."""
    return [k for k in config.configurable_items if k.endswith("_port") and k != "etcd_port"]


_ETCD_CONF = """\
name: default
listen-client-urls: http://127.0.0.1:{client}
advertise-client-urls: http://127.0.0.1:{client}
listen-peer-urls: http://127.0.0.1:{peer}
initial-advertise-peer-urls: http://127.0.0.1:{peer}
initial-cluster: default=http://127.0.0.1:{peer}
"""


def _bind_reusable(port: int) -> socket.socket | None:
    """MilvusServerConfig.try_bind_port with SO_REUSEADDR, as the Go server binds."""
    sock = socket.socket()
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen()
        return sock
    except OSError:
        sock.close()
        return None


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def _wait_healthy(handle: ServerHandle, proc) -> None:  # noqa: ANN001 - a Popen
    import urllib.request

    from pymilvus import MilvusClient

    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerDied(f"Milvus exited with {proc.returncode}; see {handle.base_dir}/logs")
        try:
            with urllib.request.urlopen(handle.health_url, timeout=2) as resp:  # noqa: S310
                if b"OK" in resp.read():
                    break
        except OSError:
            pass
        time.sleep(0.3)
    else:
        raise TimeoutError(f"Milvus not healthy after {START_TIMEOUT_S}s ({handle.health_url})")
    while True:  # healthz can answer before the proxy serves requests
        try:
            client = MilvusClient(uri=handle.uri, timeout=10)
            client.list_collections()
            client.close()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    """One real Milvus standalone server for the whole session (or the external one)."""
    external = os.environ.get(ENV_EXTERNAL)
    if external:
        yield ServerHandle(uri=external)
        return
    require_server_package()
    handle = start_milvus_server(tmp_path_factory.mktemp("milvus-server"))
    try:
        yield handle
    finally:
        handle.stop()


def drop_namespace(uri: str, prefix: str) -> None:
    """Drop every alias and collection whose name starts with ``prefix`` (test cleanup)."""
    from pymilvus import MilvusClient

    client = MilvusClient(uri=uri, timeout=30)
    try:
        for name in client.list_collections():
            if not name.startswith(prefix):
                continue
            for alias in client.list_aliases(collection_name=name).get("aliases", []):
                client.drop_alias(alias)
            client.drop_collection(name)
    finally:
        client.close()


def server_settings(uri: str, tmp_path: Path, cache_dir: Path) -> Settings:
    """Settings for a fresh namespace on a shared server: a unique collection alias."""
    return Settings.of(
        uri=uri,
        collection=f"t{uuid.uuid4().hex[:12]}",
        cache_dir=str(cache_dir),
        device="cpu",
        lock_dir=str(tmp_path / "locks"),
        retries=2,
        retry_backoff=0.2,
        workers=0,
        threads=2,
    )


# The server half is `slow`: each call on a real server waits for its coordinators (flush,
# index, load), seconds per test.
BACKENDS = ["lite", pytest.param("server", marks=[pytest.mark.server, pytest.mark.slow])]


@contextlib.contextmanager
def backend(
    kind: str, request: pytest.FixtureRequest, root: Path, cache_dir: Path
) -> Iterator[Settings]:
    """A fresh namespace on ``kind`` ("lite" or "server"), dropped afterwards on a server."""
    if kind == "lite":
        yield lite_settings(root, cache_dir)
        return
    server: ServerHandle = request.getfixturevalue("milvus_server")
    settings = server_settings(server.uri, root, cache_dir)
    try:
        yield settings
    finally:
        drop_namespace(server.uri, settings.store.collection)


@pytest.fixture(params=BACKENDS)
def backend_settings(
    request: pytest.FixtureRequest, tmp_path: Path, cache_dir: Path
) -> Iterator[Settings]:
    """Settings for a fresh store on Milvus Lite, then on the real Milvus server."""
    with backend(request.param, request, tmp_path, cache_dir) as settings:
        yield settings
