"""`vsearch serve` as a real process on 127.0.0.1: HTTP API, remote client, gradio_client."""

from __future__ import annotations

import socket

import httpx
import pytest
from PIL import Image

from search import ConfigError, ImageError, ItemNotFound, Range, StoreError, TextSearchUnsupported
from search.client import RemoteSearcher

from .conftest import NAMES

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def remote(live_server) -> RemoteSearcher:
    with RemoteSearcher(live_server.url, timeout=60) as client:
        yield client


def test_serve_binds_loopback_and_reports_health(live_server) -> None:
    health = httpx.get(live_server.url + "/health").json()
    assert health == {
        "status": "ok",
        "collection": "catalog",
        "count": 2 * len(NAMES),
        "model": health["model"],
        "error": "",
    }
    assert health["model"].startswith("builtin:efficientnet-lite0")
    assert "serving catalog (10 items) at http://127.0.0.1:" in live_server.log.read_text()
    page = httpx.get(live_server.url + "/")
    assert page.status_code == 200 and "gradio" in page.text.lower()


def test_remote_client_matches_the_local_interface(remote: RemoteSearcher, ui_catalog) -> None:
    info = remote.info()
    assert info.count == 10 and info.aliases == ("catalog",) and info.model.dim == 1280
    assert remote.has_text() is False
    item = remote.get("coffee-0")
    assert item.metadata["title"] == "coffee view 0" and item.image.endswith("coffee-0.jpg")
    photo = ui_catalog.parent / "img" / "stereo_motorcycle-1.jpg"
    by_path = remote.similar(str(photo), limit=3)
    by_pil = remote.similar(Image.open(photo), limit=3)
    assert [m.id for m in by_path][:2] == ["stereo_motorcycle-1", "stereo_motorcycle-0"]
    assert [m.id for m in by_pil][0] == "stereo_motorcycle-1"
    near = remote.similar_by_id("rocket-0", limit=5, filters={"category": "vehicles"})
    assert {m.metadata["category"] for m in near} == {"vehicles"} and len(near) == 3
    cheap = remote.similar_by_id("rocket-0", limit=10, filters={"price": Range(max=21)})
    assert cheap and all(m.metadata["price"] <= 21 for m in cheap)
    page2 = remote.similar_by_id("rocket-0", limit=2, offset=2)
    assert page2 == remote.similar_by_id("rocket-0", limit=4)[2:]


def test_remote_errors_are_the_library_errors(remote: RemoteSearcher, tmp_path) -> None:
    with pytest.raises(ItemNotFound):
        remote.similar_by_id("no-such-item")
    with pytest.raises(ItemNotFound):
        remote.get("../../etc/passwd")
    with pytest.raises(TextSearchUnsupported):
        remote.similar_text("a red bicycle")
    with pytest.raises(ConfigError):
        remote.similar_by_id("rocket-0", limit=0)
    with pytest.raises(ConfigError):
        remote.similar_by_id("rocket-0", filters={"price": {"between": [1, 2]}})
    with pytest.raises(ImageError):
        remote.similar(b"definitely not a photo")
    with pytest.raises(StoreError):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        RemoteSearcher(f"http://127.0.0.1:{port}", timeout=5).info()


MALFORMED = [
    (
        "POST",
        "/api/search/id",
        {"content": b"\xff\xfe garbage", "headers": {"content-type": "application/json"}},
    ),
    ("POST", "/api/search/id", {"json": [1, 2, 3]}),
    ("POST", "/api/search/id", {"json": {"id": "x", "limit": "ten"}}),
    ("POST", "/api/search/id", {"json": {"id": "x", "unexpected": True}}),
    (
        "POST",
        "/api/search/image",
        {"content": b"--broken--", "headers": {"content-type": "multipart/form-data; boundary=zz"}},
    ),
    (
        "POST",
        "/api/search/image",
        {"files": {"image": ("a.jpg", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)}},
    ),
    (
        "POST",
        "/api/search/image",
        {"files": {"image": ("a.jpg", b"GIF89a")}, "data": {"limit": "-4"}},
    ),
    ("POST", "/api/search/text", {"json": {"text": "x" * 5000}}),
    ("GET", "/api/item?id=" + "%00", {}),
    ("GET", "/api/image?id=%2F..%2F..%2Fetc%2Fpasswd", {}),
    ("GET", "/api/image?id=" + "a" * 2000, {}),
    ("GET", "/api/search/id", {}),
]


@pytest.mark.parametrize(("method", "path", "kw"), MALFORMED)
def test_malformed_requests_get_4xx(live_server, method: str, path: str, kw: dict) -> None:
    resp = httpx.request(method, live_server.url + path, timeout=60, **kw)
    assert 400 <= resp.status_code < 500, resp.text
    assert b"Traceback" not in resp.content and b"root:" not in resp.content
    body = resp.json()  # one documented shape, body-parse errors included
    assert set(body) == {"detail", "error"} and body["error"] and body["detail"], body


@pytest.mark.browser
def test_api_docs_render_with_the_network_blocked(live_server, chromium) -> None:
    """/api/docs loaded Swagger UI from a CDN: offline it was a blank page."""
    page = chromium.new_page()
    outside: list[str] = []

    def only_local(route) -> None:
        if route.request.url.startswith(live_server.url):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", only_local)
    try:
        page.goto(live_server.url + "/api/docs", wait_until="load")
        page.wait_for_selector(".swagger-ui .info .title", timeout=60_000)
        assert "vsearch" in page.inner_text(".swagger-ui .info .title")
        page.wait_for_selector(".opblock-summary-path", timeout=60_000)
        paths = page.locator(".opblock-summary-path").all_inner_texts()
        assert "/api/search/image" in paths and len(paths) >= 8, paths  # every operation
    finally:
        page.close()
    assert outside == []


def test_gradio_client_calls_the_named_endpoints(live_server, ui_catalog) -> None:
    from gradio_client import Client, handle_file

    client = Client(live_server.url + "/", verbose=False)
    try:
        api = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
        assert {"/search_image", "/search_text", "/similar_by_id"} <= set(api)
        hits = client.predict("rocket-0", 3, api_name="/similar_by_id")
        assert [h["id"] for h in hits][0] == "rocket-1" and len(hits) == 3
        photo = handle_file(str(ui_catalog.parent / "img" / "coffee-0.jpg"))
        gallery, message, *_ = client.predict(photo, 4, "Any", None, None, api_name="/search_image")
        assert len(gallery) == 4 and gallery[0]["caption"].startswith("coffee view 0")
    finally:
        client.close()


def test_oversized_uploads_are_refused_server_side(live_server) -> None:
    big = b"\xff\xd8\xff" + b"\0" * (1024 * 1024 + 10)  # over the 1 MB limit it was started with
    api = httpx.post(live_server.url + "/api/search/image", files={"image": ("big.jpg", big)})
    assert api.status_code == 413 and api.json()["error"] == "ImageError"
    gradio = httpx.post(live_server.url + "/gradio_api/upload", files={"files": ("big.jpg", big)})
    assert gradio.status_code == 413
    small = httpx.post(
        live_server.url + "/gradio_api/upload", files={"files": ("s.jpg", b"x" * 100)}
    )
    assert small.status_code == 200
