"""Catalogs by URL against a local HTTP server: limits, content checks, retries, ETag/304."""

from __future__ import annotations

import io
import threading
import time
from collections import Counter
from collections.abc import Iterator
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from indexer.download import Downloader, DownloadPolicy, download_bytes, sniff_image
from indexer.hashing import content_hash
from indexer.pipeline import run_index
from indexer.url_cache import UrlCache
from search.errors import ImageError
from search.store import MilvusStore
from tests.helpers import photo, variant, write_manifest

LAST_MODIFIED = formatdate(1_700_000_000, usegmt=True)


def jpeg(name: str, k: int = 0) -> bytes:
    buf = io.BytesIO()
    variant(photo(name, 160), k).save(buf, "JPEG", quality=85)
    return buf.getvalue()


class CatalogServer:
    """Serves images with ETag (``/etag/``) or Last-Modified (``/lm/``) and bad cases."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: Counter[str] = Counter()
        self.statuses: Counter[tuple[str, int]] = Counter()
        self.flaky_left = 1
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                with outer.lock:
                    outer.requests[self.path] += 1
                outer.route(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def route(self, h: BaseHTTPRequestHandler) -> int:
        path = h.path
        if path.startswith("/etag/") and path in self.files:
            body = self.files[path]
            tag = f'"{content_hash(body)}"'
            if h.headers.get("If-None-Match") == tag:
                return self._send(h, 304, b"", etag=tag)
            return self._send(h, 200, body, etag=tag)
        if path.startswith("/lm/") and path in self.files:
            if h.headers.get("If-Modified-Since") == LAST_MODIFIED:
                return self._send(h, 304, b"")
            return self._send(h, 200, self.files[path], last_modified=LAST_MODIFIED)
        if path == "/slow.jpg":  # silent far longer than POLICY's read timeout
            time.sleep(4.0)
            return self._send(h, 200, jpeg("coffee"))
        if path == "/big.jpg":  # announced as too big
            return self._send(h, 200, b"\xff\xd8\xff" + b"\0" * (300 * 1024))
        if path == "/big-stream.jpg":  # no Content-Length, streams past the limit
            self._count(h, 200)
            h.send_response(200)
            h.send_header("Content-Type", "image/jpeg")
            h.end_headers()
            try:
                for _ in range(40):
                    h.wfile.write(b"\xff\xd8\xff" + b"\0" * 16 * 1024)
            except OSError:
                pass
            h.close_connection = True
            return 200
        if path == "/fake.jpg":  # an HTML error page served as image/jpeg
            return self._send(h, 200, b"<!doctype html><html><body>Not found</body></html>")
        if path == "/page.jpg":
            return self._send(h, 200, b"<html></html>", ctype="text/html; charset=utf-8")
        if path == "/flaky.jpg":
            with self.lock:
                fail, self.flaky_left = self.flaky_left > 0, self.flaky_left - 1
            return self._send(h, 503, b"busy") if fail else self._send(h, 200, jpeg("rocket"))
        return self._send(h, 404, b"no such file", ctype="text/plain")

    def _count(self, h: BaseHTTPRequestHandler, code: int) -> None:
        """Count a response BEFORE sending it: the client may check as soon as it has it."""
        with self.lock:
            self.statuses[(h.path, code)] += 1

    def _send(
        self,
        h: BaseHTTPRequestHandler,
        code: int,
        body: bytes,
        *,
        ctype: str = "image/jpeg",
        etag: str = "",
        last_modified: str = "",
    ) -> int:
        self._count(h, code)
        h.send_response(code)
        if code != 304:
            h.send_header("Content-Type", ctype)
            h.send_header("Content-Length", str(len(body)))
        if etag:
            h.send_header("ETag", etag)
        if last_modified:
            h.send_header("Last-Modified", last_modified)
        h.end_headers()
        if code != 304:
            h.wfile.write(body)
        return code

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[CatalogServer]:
    srv = CatalogServer()
    try:
        yield srv
    finally:
        srv.close()


POLICY = DownloadPolicy(
    read_timeout=1.5,  # a loaded test machine can stall a good reply for 0.5 s
    total_timeout=5.0,
    retries=1,
    backoff=0.01,
    max_bytes=256 * 1024,
    workers=4,
    allow_private=True,  # the test server is on 127.0.0.1
)


def test_bad_urls_fail_with_reasons_and_good_ones_download(server, tmp_path: Path) -> None:
    server.files["/etag/cat.jpg"] = jpeg("chelsea")
    names = [
        "/etag/cat.jpg",
        "/missing.jpg",
        "/slow.jpg",
        "/big.jpg",
        "/big-stream.jpg",
        "/fake.jpg",
        "/page.jpg",
        "/flaky.jpg",
    ]
    got = Downloader(UrlCache(tmp_path), POLICY).fetch_all(server.url + n for n in names)
    by = {u.removeprefix(server.url): r for u, r in got.items()}
    assert by["/etag/cat.jpg"].status == "downloaded"
    assert Path(by["/etag/cat.jpg"].path).read_bytes() == server.files["/etag/cat.jpg"]
    assert by["/etag/cat.jpg"].content_hash == content_hash(server.files["/etag/cat.jpg"])
    assert "HTTP 404" in by["/missing.jpg"].error
    assert "after 2 attempt(s)" in by["/slow.jpg"].error and "timed out" in by["/slow.jpg"].error
    assert "larger than 262,144 bytes" in by["/big.jpg"].error
    assert "larger than 262,144 bytes" in by["/big-stream.jpg"].error
    assert "not an image" in by["/fake.jpg"].error and "HTML" in by["/fake.jpg"].error
    assert "Content-Type 'text/html'" in by["/page.jpg"].error
    assert by["/flaky.jpg"].status == "downloaded"  # a 503, then a retry that worked
    assert server.requests["/flaky.jpg"] == 2 and server.requests["/slow.jpg"] == 2
    assert server.requests["/missing.jpg"] == 1  # 4xx is final: no retry
    assert server.requests["/fake.jpg"] == 1
    failed = [n for n, r in by.items() if r.status == "failed"]
    assert all(by[n].path == "" and by[n].signature == "" for n in failed)
    assert len(failed) == 6


def test_etag_revalidation_downloads_only_changed_urls(server, tmp_path: Path) -> None:
    server.files["/etag/a.jpg"] = jpeg("chelsea")
    server.files["/etag/b.jpg"] = jpeg("coffee")
    urls = [server.url + "/etag/a.jpg", server.url + "/etag/b.jpg"]
    first = Downloader(UrlCache(tmp_path), POLICY).fetch_all(urls)
    assert [r.status for r in first.values()] == ["downloaded", "downloaded"]
    second = Downloader(UrlCache(tmp_path), POLICY).fetch_all(urls)  # a new run, same cache
    assert [r.status for r in second.values()] == ["not-modified", "not-modified"]
    assert {u: r.signature for u, r in second.items()} == {u: r.signature for u, r in first.items()}
    server.files["/etag/b.jpg"] = jpeg("coffee", 1)
    third = Downloader(UrlCache(tmp_path), POLICY).fetch_all(urls)
    assert third[urls[0]].status == "not-modified" and third[urls[1]].status == "downloaded"
    assert third[urls[1]].content_hash == content_hash(server.files["/etag/b.jpg"])
    assert server.statuses[("/etag/a.jpg", 200)] == 1 and server.statuses[("/etag/a.jpg", 304)] == 2
    assert server.statuses[("/etag/b.jpg", 200)] == 2 and server.statuses[("/etag/b.jpg", 304)] == 1


def test_last_modified_revalidation_and_sniffing(server, tmp_path: Path) -> None:
    server.files["/lm/a.jpg"] = jpeg("rocket")
    url = server.url + "/lm/a.jpg"
    cache = UrlCache(tmp_path)
    assert Downloader(cache, POLICY).fetch(url).status == "downloaded"
    assert cache.get(url).last_modified == LAST_MODIFIED
    again = Downloader(cache, POLICY).fetch(url)
    assert (
        again.status == "not-modified"
        and Path(again.path).read_bytes() == server.files["/lm/a.jpg"]
    )
    assert server.statuses[("/lm/a.jpg", 304)] == 1
    assert download_bytes(url, POLICY) == server.files["/lm/a.jpg"]  # no cache, plain GET
    with pytest.raises(ImageError, match="not an image"):
        download_bytes(server.url + "/fake.jpg", POLICY)
    assert sniff_image(server.files["/lm/a.jpg"]) == "jpeg"
    assert sniff_image(b"\x89PNG\r\n\x1a\n....") == "png" and sniff_image(b"<html>") is None


def test_index_url_catalog_reruns_without_downloading_or_embedding(
    server, tmp_path: Path, settings, embedder
) -> None:
    names = ["chelsea", "coffee", "rocket"]
    for n in names:
        server.files[f"/etag/{n}.jpg"] = jpeg(n)
    rows = [{"id": n, "image": f"{server.url}/etag/{n}.jpg", "category": n} for n in names]
    rows += [
        {"id": "gone", "image": f"{server.url}/missing.jpg", "category": "x"},
        {"id": "html", "image": f"{server.url}/fake.jpg", "category": "x"},
    ]
    manifest = write_manifest(tmp_path / "cat", rows)
    settings = settings.replace(allow_private_urls=True)  # the test server is on 127.0.0.1
    store = MilvusStore(settings)
    first = run_index(manifest, settings, embedder=embedder, store=store)
    assert (first.added, first.embedded, first.count) == (3, 3, 3)
    assert {f.id for f in first.failed} == {"gone", "html"} and not first.ok

    second = run_index(manifest, settings, embedder=embedder, store=store)
    assert (second.embedded, second.unchanged, second.count) == (0, 3, 3)
    assert all(server.statuses[(f"/etag/{n}.jpg", 304)] == 1 for n in names)
    assert all(server.statuses[(f"/etag/{n}.jpg", 200)] == 1 for n in names)

    server.files["/etag/coffee.jpg"] = jpeg("coffee", 2)
    third = run_index(manifest, settings, embedder=embedder, store=store)
    assert (third.embedded, third.updated, third.unchanged) == (1, 1, 2)
    stored = store.fingerprints(third.collection)
    assert stored["coffee"].content_hash == content_hash(server.files["/etag/coffee.jpg"])
    assert stored["coffee"].source_sig == "url:" + stored["coffee"].content_hash
