"""Hostile catalog URLs (issue 17, items 2-4): drips, slow headers, bodies cut short or
broken, redirects, and addresses the indexer must not reach (SSRF).

Every server here is a raw socket server on loopback, so the tests allow private addresses
explicitly, except the ones that show the default refuses them. No test asserts on time:
the drip servers count the bytes they got out before the client hung up (one byte a second,
so a client held for the whole body would take 200).
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from indexer import url_guard
from indexer.download import Downloader, DownloadPolicy, download_bytes
from indexer.hashing import content_hash
from indexer.url_cache import UrlCache
from search.errors import ImageError
from tests.helpers import photo

from . import hostile

GOOD = hostile.encode(photo("coffee", 96), "JPEG", quality=90)
Handler = Callable[[socket.socket, str, dict[str, str]], None]


class RawServer:
    """A loopback HTTP server whose handlers write raw bytes (and may misbehave)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.routes: dict[str, Handler] = {}
        self.requests: Counter[str] = Counter()
        self.headers: list[dict[str, str]] = []
        self.sent: list[int] = []  # bytes a drip handler got out before the client left
        self.sock = socket.create_server((host, 0))
        self.url = f"http://{host}:{self.sock.getsockname()[1]}"
        self.stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(30)
            try:
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    head += chunk
                lines = head.split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                headers = {
                    k.lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])
                }
                self.requests[path] += 1
                self.headers.append(headers)
                self.routes.get(path, _not_found)(conn, path, headers)
            except OSError:
                pass

    def drip(self, conn: socket.socket, data: bytes, every: float = 1.0) -> None:
        """Send ``data`` one byte per ``every`` seconds; record how far it got."""
        sent = 0
        try:
            for i in range(len(data)):
                conn.sendall(data[i : i + 1])
                sent += 1
                time.sleep(every)
        except OSError:
            pass
        self.sent.append(sent)

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


def _head(status: str = "200 OK", length: int | None = None, **extra: str) -> bytes:
    lines = [f"HTTP/1.1 {status}", "Content-Type: image/jpeg", "Connection: close"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in extra.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _not_found(conn: socket.socket, path: str, headers: dict[str, str]) -> None:
    conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")


def _serve_good(conn: socket.socket, path: str, headers: dict[str, str]) -> None:
    tag = f'"{content_hash(GOOD)}"'
    if headers.get("if-none-match") == tag:
        conn.sendall(b"HTTP/1.1 304 Not Modified\r\nConnection: close\r\n\r\n")
        return
    conn.sendall(_head(length=len(GOOD), ETag=tag) + GOOD)


def _dripping_body(server: RawServer, every: float) -> Handler:
    """Headers at once with Content-Length: 200, then the body one byte per ``every`` s."""

    def handler(conn: socket.socket, path: str, headers: dict[str, str]) -> None:
        conn.sendall(_head(length=200))
        server.drip(conn, GOOD[:200], every)

    return handler


@pytest.fixture
def server() -> Iterator[RawServer]:
    srv = RawServer()
    srv.routes["/good.jpg"] = _serve_good
    try:
        yield srv
    finally:
        srv.close()


def policy(**kw: object) -> DownloadPolicy:
    base: dict[str, object] = {
        "connect_timeout": 2.0,
        "read_timeout": 5.0,
        "total_timeout": 2.0,
        "min_rate": 0.0,
        "retries": 1,
        "backoff": 0.01,
        "allow_private": True,
    }
    return DownloadPolicy(**{**base, **kw})  # type: ignore[arg-type]


def _cached_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


# -- item 2: deadlines hold while a server drips -----------------------------------------
@pytest.mark.slow
def test_drip_body_is_cut_at_the_total_deadline_on_every_attempt(server: RawServer) -> None:
    """Content-Length: 200, then one byte a second: the 2 s deadline ends each attempt."""
    server.routes["/drip.jpg"] = _dripping_body(server, 1.0)
    with pytest.raises(ImageError, match=r"after 2 attempt\(s\): timed out"):
        download_bytes(server.url + "/drip.jpg", policy())
    time.sleep(2.5)  # let each drip thread notice the hang-up and record its count
    assert server.requests["/drip.jpg"] == 2
    assert len(server.sent) == 2 and all(n <= 5 for n in server.sent), server.sent


@pytest.mark.slow
@pytest.mark.parametrize("header_timeout, total_timeout", [(2.0, 30.0), (30.0, 2.0)])
def test_slow_headers_are_cut_at_the_header_or_total_deadline(
    server: RawServer, header_timeout: float, total_timeout: float
) -> None:
    """Headers sent one byte a second (each read well within the read timeout)."""
    head = _head(length=len(GOOD)) * 4  # long enough to drip past any deadline
    server.routes["/slow-head.jpg"] = lambda c, p, h: server.drip(c, head)
    limits = policy(retries=0, header_timeout=header_timeout, total_timeout=total_timeout)
    with pytest.raises(ImageError, match="timed out"):
        download_bytes(server.url + "/slow-head.jpg", limits)
    time.sleep(2.5)
    assert server.sent and all(n <= 5 for n in server.sent), server.sent


def test_a_body_below_the_minimum_rate_fails(server: RawServer) -> None:
    server.routes["/trickle.jpg"] = _dripping_body(server, 0.2)
    slow = policy(retries=0, total_timeout=30.0, min_rate=100.0, min_rate_after=0.5)
    with pytest.raises(ImageError, match="too slow"):
        download_bytes(server.url + "/trickle.jpg", slow)


# -- item 3: nothing broken is ever cached -----------------------------------------------
def test_a_body_cut_short_is_retried_and_never_cached(server: RawServer, tmp_path: Path) -> None:
    def cut(conn: socket.socket, path: str, headers: dict[str, str]) -> None:
        conn.sendall(_head(length=len(GOOD), ETag='"v1"') + GOOD[: len(GOOD) // 2])

    server.routes["/cut.jpg"] = cut
    got = Downloader(UrlCache(tmp_path / "urls"), policy()).fetch(server.url + "/cut.jpg")
    assert got.status == "failed" and "after 2 attempt(s)" in got.error, got.error
    assert "broke the response off" in got.error or "cut short" in got.error, got.error
    assert server.requests["/cut.jpg"] == 2
    assert _cached_files(tmp_path / "urls") == []


def test_a_whole_body_that_does_not_decode_is_never_cached(
    server: RawServer, tmp_path: Path
) -> None:
    half = GOOD[: len(GOOD) // 2]  # a truncated JPEG served with its own (matching) length

    def whole_but_broken(conn: socket.socket, path: str, headers: dict[str, str]) -> None:
        conn.sendall(_head(length=len(half), ETag='"v"') + half)

    server.routes["/half.jpg"] = whole_but_broken
    got = Downloader(UrlCache(tmp_path / "urls"), policy()).fetch(server.url + "/half.jpg")
    assert got.status == "failed" and "truncated image" in got.error, got.error
    assert _cached_files(tmp_path / "urls") == []


def test_a_broken_entry_cached_by_an_older_run_is_fetched_again(
    server: RawServer, tmp_path: Path
) -> None:
    """The old bug: a short body stored with its ETag, then 304 on every run forever."""
    url = server.url + "/good.jpg"
    cache = UrlCache(tmp_path / "urls")
    broken = GOOD[: len(GOOD) // 2]
    tag = f'"{content_hash(GOOD)}"'
    cache.put(url, broken, content_hash=content_hash(broken), etag=tag, verified=False)
    got = Downloader(cache, policy()).fetch(url)
    assert got.status == "downloaded" and got.content_hash == content_hash(GOOD)
    assert "if-none-match" not in server.headers[-1]  # a full GET, not a revalidation
    assert Path(got.path).read_bytes() == GOOD and cache.get(url).verified
    again = Downloader(cache, policy()).fetch(url)  # and now the ETag works as before
    assert again.status == "not-modified" and server.requests["/good.jpg"] == 2


def test_an_old_entry_that_is_whole_is_kept_and_revalidated(
    server: RawServer, tmp_path: Path
) -> None:
    url = server.url + "/good.jpg"
    cache = UrlCache(tmp_path / "urls")
    tag = f'"{content_hash(GOOD)}"'
    cache.put(url, GOOD, content_hash=content_hash(GOOD), etag=tag, verified=False)
    got = Downloader(cache, policy()).fetch(url)
    assert got.status == "not-modified" and cache.get(url).verified


# -- item 4: SSRF guard --------------------------------------------------------------------
def test_default_policy_refuses_loopback_without_connecting(server: RawServer) -> None:
    with pytest.raises(ImageError, match="refused URL: 127.0.0.1 resolves to a private"):
        download_bytes(server.url + "/good.jpg", DownloadPolicy(retries=0))
    assert server.requests["/good.jpg"] == 0
    assert download_bytes(server.url + "/good.jpg", policy()) == GOOD  # allowed explicitly


@pytest.mark.parametrize(
    "address, public",
    [
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),  # cloud metadata
        ("100.64.0.1", False),  # shared (CGNAT)
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("239.255.255.250", False),
        ("::1", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("::ffff:127.0.0.1", False),
        ("ff02::1", False),
        ("8.8.8.8", True),
        ("2606:4700:4700::1111", True),
    ],
)
def test_address_classes(address: str, public: bool) -> None:
    assert url_guard.is_public(address) is public


def _redirect(to: str) -> Handler:
    def handler(conn: socket.socket, path: str, headers: dict[str, str]) -> None:
        conn.sendall(
            f"HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\n"
            "Connection: close\r\n\r\n".encode()
        )

    return handler


def test_redirects_are_followed_with_a_bound_and_only_to_http(server: RawServer) -> None:
    other = RawServer()
    try:
        other.routes["/good.jpg"] = _serve_good
        server.routes["/hop.jpg"] = _redirect(other.url + "/good.jpg")  # another port: fine
        server.routes["/ftp.jpg"] = _redirect("ftp://127.0.0.1/x.jpg")
        server.routes["/loop.jpg"] = _redirect("/loop.jpg")
        assert download_bytes(server.url + "/hop.jpg", policy()) == GOOD
        with pytest.raises(ImageError, match="scheme 'ftp'"):
            download_bytes(server.url + "/ftp.jpg", policy())
        with pytest.raises(ImageError, match="more than 5 redirects"):
            download_bytes(server.url + "/loop.jpg", policy())
        assert server.requests["/loop.jpg"] == 6
    finally:
        other.close()


@pytest.fixture
def only_127_0_0_1_is_public(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend 127.0.0.1 is a public host and 127.0.0.2 a private one (both loopback)."""
    monkeypatch.setattr(url_guard, "is_public", lambda address: address == "127.0.0.1")


def test_a_redirect_to_a_private_address_is_refused(
    server: RawServer, only_127_0_0_1_is_public: None
) -> None:
    private = RawServer("127.0.0.2")
    try:
        private.routes["/secret.jpg"] = _serve_good
        server.routes["/jump.jpg"] = _redirect(private.url + "/secret.jpg")
        with pytest.raises(ImageError, match="127.0.0.2"):
            download_bytes(server.url + "/jump.jpg", DownloadPolicy(retries=0))
        assert server.requests["/jump.jpg"] == 1 and private.requests["/secret.jpg"] == 0
    finally:
        private.close()


def test_dns_rebinding_between_check_and_connect_is_refused(
    server: RawServer, only_127_0_0_1_is_public: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The name resolves to a 'public' address when checked, to a private one at connect."""
    private = RawServer("127.0.0.2")
    real = socket.getaddrinfo
    answers = iter(["127.0.0.1", "127.0.0.2", "127.0.0.2", "127.0.0.2"])

    def fake(host, port, *args, **kw):  # noqa: ANN001, ANN202
        if host == "rebind.test":
            host = next(answers)
        return real(host, port, *args, **kw)

    monkeypatch.setattr(url_guard.socket, "getaddrinfo", fake)
    try:
        private.routes["/secret.jpg"] = _serve_good
        port = private.url.rsplit(":", 1)[1]
        with pytest.raises(ImageError, match="refused URL"):
            download_bytes(f"http://rebind.test:{port}/secret.jpg", DownloadPolicy(retries=0))
        assert private.requests["/secret.jpg"] == 0
    finally:
        private.close()


@pytest.mark.slow
def test_index_with_default_settings_refuses_a_loopback_catalog_url(
    server: RawServer, tmp_path: Path, settings, embedder
) -> None:
    from indexer.pipeline import run_index
    from tests.helpers import write_manifest

    rows = [{"id": "a", "image": server.url + "/good.jpg"}]
    manifest = write_manifest(tmp_path / "cat", rows)
    report = run_index(manifest, settings.replace(retries=0), embedder=embedder)
    assert report.count == 0
    assert "refused URL" in {f.id: f.reason for f in report.failed}["a"]
    assert server.requests["/good.jpg"] == 0
    allowed = settings.replace(allow_private_urls=True)
    report = run_index(manifest, allowed, embedder=embedder)
    assert report.count == 1 and server.requests["/good.jpg"] == 1


def test_a_cache_write_that_fails_leaves_no_entry(
    server: RawServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The body and its record each go through a temp file and os.replace: a failure (disk
    full, a crash) leaves neither a torn body nor a record pointing at one."""
    from indexer import url_cache

    url = server.url + "/good.jpg"
    cache = UrlCache(tmp_path / "urls")
    real = url_cache.os.replace

    def failing(src: str, dst: str) -> None:
        if str(dst).endswith(".json"):  # the body is in place, its record cannot be
            raise OSError(28, "No space left on device")
        real(src, dst)

    monkeypatch.setattr(url_cache.os, "replace", failing)
    got = Downloader(cache, policy()).fetch(url)
    assert got.status == "failed" and "cannot write the URL cache" in got.error
    assert cache.get(url) is None
    assert not [p for p in _cached_files(tmp_path / "urls") if p.name.startswith(".tmp-")]
    monkeypatch.setattr(url_cache.os, "replace", real)
    assert Downloader(cache, policy()).fetch(url).status == "downloaded"
    assert cache.get(url) is not None and cache.get(url).verified
