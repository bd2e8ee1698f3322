"""The catalog decoder of every job (index, eval, finetune) honours ``allow_private_urls``."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from indexer.decoding import catalog_decoder
from search.config import Settings
from search.errors import ImageError


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture
def loopback_url() -> Iterator[str]:
    body = _jpeg()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/p.jpg"
    finally:
        server.shutdown()
        server.server_close()


def test_private_urls_are_refused_unless_the_settings_allow_them(loopback_url: str) -> None:
    refused = catalog_decoder(10_000_000, None)
    with pytest.raises(ImageError, match="refused"):
        refused(loopback_url)
    allowed = Settings.of(allow_private_urls=True)
    decoder = catalog_decoder(10_000_000, None, allow_private=allowed.indexing.allow_private_urls)
    assert decoder(loopback_url).size == (64, 48)
