"""The JSON API in process (FastAPI TestClient): results, paging, filters, errors."""

from __future__ import annotations

import io
import json

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from search import Searcher, Settings
from ui.server import build_app
from ui.service import UiOptions

from .conftest import NAMES


@pytest.fixture(scope="module")
def client(ui_settings: Settings, ui_searcher: Searcher) -> TestClient:
    app = build_app(
        ui_settings, UiOptions(max_upload_bytes=300_000, calibrate=False), searcher=ui_searcher
    )
    return TestClient(app)


def jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def test_health_and_info(client: TestClient) -> None:
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["count"] == 2 * len(NAMES), health
    info = client.get("/api/info").json()
    assert info["collection"] == "catalog"
    assert info["live"]["count"] == 2 * len(NAMES) and info["has_text"] is False
    assert info["live"]["model"]["name"] == "builtin:efficientnet-lite0"


def test_search_by_uploaded_photo_finds_the_product_first(client: TestClient, ui_catalog) -> None:
    photo = (ui_catalog.parent / "img" / "coffee-1.jpg").read_bytes()
    resp = client.post("/api/search/image", files={"image": ("q.jpg", photo)}, data={"limit": "3"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    ids = [m["id"] for m in body["matches"]]
    assert ids[:2] == ["coffee-1", "coffee-0"]
    scores = [m["score"] for m in body["matches"]]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0.99
    assert body["matches"][0]["image_url"] == "/api/image?id=coffee-1"
    assert body["next_offset"] == 3


def test_more_like_this_by_id_with_filters_and_paging(client: TestClient) -> None:
    first = client.post("/api/search/id", json={"id": "rocket-0", "limit": 4}).json()["matches"]
    assert "rocket-0" not in [m["id"] for m in first]
    assert first[0]["id"] == "rocket-1"
    page2 = client.post("/api/search/id", json={"id": "rocket-0", "limit": 2, "offset": 2})
    assert [m["id"] for m in page2.json()["matches"]] == [m["id"] for m in first[2:4]]
    only = client.post(
        "/api/search/id",
        json={"id": "rocket-0", "limit": 10, "filters": {"category": "vehicles"}},
    ).json()["matches"]
    assert {m["metadata"]["category"] for m in only} == {"vehicles"}
    assert len(only) == 3  # rocket-1 and both motorcycles
    cheap = client.post(
        "/api/search/id",
        json={"id": "rocket-0", "limit": 10, "filters": {"price": {"lt": 21}}},
    ).json()["matches"]
    assert cheap and all(m["metadata"]["price"] < 21 for m in cheap)


def test_filter_values_cannot_inject_expressions(client: TestClient) -> None:
    evil = {"category": 'x" or id != "', "brand": ["a\\", "it's"]}
    resp = client.post("/api/search/id", json={"id": "rocket-0", "filters": evil})
    assert resp.status_code == 200 and resp.json()["matches"] == []


def test_item_facets_and_image_by_id(client: TestClient, ui_catalog) -> None:
    item = client.get("/api/item", params={"id": "chelsea-0"}).json()["item"]
    assert item["metadata"]["category"] == "animals" and item["metadata"]["price"] == 10.0
    facets = client.get("/api/facets").json()
    assert facets["values"]["category"] == ["animals", "kitchen", "people", "vehicles"]
    assert facets["range"] == [10.0, 51.0]
    img = client.get("/api/image", params={"id": "chelsea-0"})
    assert img.status_code == 200 and img.headers["content-type"] == "image/jpeg"
    assert img.content == (ui_catalog.parent / "img" / "chelsea-0.jpg").read_bytes()


@pytest.mark.parametrize(
    "crafted",
    [
        "../../../../etc/passwd",
        "/etc/passwd",
        "..%2F..%2F..%2Fetc%2Fpasswd",
        "%2e%2e/%2e%2e/etc/passwd",
        "img/chelsea-0.jpg",
        "catalog.csv",
        "../catalog.csv",
    ],
)
def test_images_are_served_by_catalog_id_only(client: TestClient, crafted: str) -> None:
    resp = client.get("/api/image", params={"id": crafted})
    assert resp.status_code == 404 and resp.json()["error"] == "ItemNotFound"
    raw = client.get(f"/api/image?id={crafted}")
    assert raw.status_code == 404 and b"root:" not in raw.content
    for path in (f"/gradio_api/file={crafted}", "/gradio_api/file=/etc/passwd"):
        leaked = client.get(path)
        assert leaked.status_code >= 400 and b"root:" not in leaked.content


BAD = [
    ("post", "/api/search/id", {"json": {"id": "nope"}}, 404, "ItemNotFound"),
    ("post", "/api/search/id", {"json": {"id": ""}}, 422, "ConfigError"),
    ("post", "/api/search/id", {"json": {"id": "a\x00b"}}, 422, "ConfigError"),
    ("post", "/api/search/id", {"json": {"id": "rocket-0", "limit": 0}}, 422, "ConfigError"),
    ("post", "/api/search/id", {"json": {"id": "rocket-0", "limit": 5000}}, 422, "ConfigError"),
    ("post", "/api/search/id", {"json": {"id": "rocket-0", "offset": -1}}, 422, "ConfigError"),
    (
        "post",
        "/api/search/id",
        {"json": {"id": "rocket-0", "filters": {"a b": 1}}},
        422,
        "ConfigError",
    ),
    (
        "post",
        "/api/search/id",
        {"json": {"id": "rocket-0", "filters": {"price": {"gte": "x"}}}},
        422,
        "ConfigError",
    ),
    (
        "post",
        "/api/search/id",
        {"json": {"id": "rocket-0", "filters": {"price": {"between": 1}}}},
        422,
        "ConfigError",
    ),
    (
        "post",
        "/api/search/id",
        {"json": {"id": "rocket-0", "filters": {"price": 10**400}}},
        422,
        "ConfigError",
    ),
    (
        "post",
        "/api/search/id",
        {"json": {"id": "rocket-0", "filters": "category == 'x'"}},
        422,
        "ConfigError",
    ),
    (
        "post",
        "/api/search/id",
        {"json": {"id": "rocket-0", "filters": {"price": {}}}},
        422,
        "ConfigError",
    ),
    (
        "post",
        "/api/search/id",
        {"content": b"{not json", "headers": {"content-type": "application/json"}},
        422,
        "ConfigError",
    ),
    ("post", "/api/search/text", {"json": {"text": "a red shoe"}}, 400, "TextSearchUnsupported"),
    ("post", "/api/search/text", {"json": {"text": ""}}, 422, "ConfigError"),
    (
        "post",
        "/api/search/image",
        {"files": {"image": ("x.txt", b"hello, not an image")}},
        422,
        "ImageError",
    ),
    ("post", "/api/search/image", {"files": {"image": ("x.jpg", b"")}}, 422, "ImageError"),
    ("post", "/api/search/image", {"data": {"limit": "3"}}, 422, "ConfigError"),
    ("get", "/api/item", {"params": {"id": "missing"}}, 404, "ItemNotFound"),
    ("get", "/api/item", {}, 422, "ConfigError"),
]


@pytest.mark.parametrize(("method", "url", "kw", "status", "error"), BAD)
def test_bad_input_is_a_4xx_with_a_message(
    client: TestClient, method: str, url: str, kw: dict, status: int, error: str
) -> None:
    resp = getattr(client, method)(url, **kw)
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["error"] == error and isinstance(body["detail"], str) and body["detail"]


def test_upload_filters_are_validated_json(client: TestClient, ui_catalog) -> None:
    photo = (ui_catalog.parent / "img" / "rocket-0.jpg").read_bytes()
    files = {"image": ("q.jpg", photo)}
    bad = client.post("/api/search/image", files=files, data={"filters": "{oops"})
    assert bad.status_code == 422 and "JSON" in bad.json()["detail"]
    bad = client.post("/api/search/image", files=files, data={"filters": '{"price": {"gte": []}}'})
    assert bad.status_code == 422
    good = client.post(
        "/api/search/image", files=files, data={"filters": json.dumps({"category": "people"})}
    )
    assert good.status_code == 200
    assert [m["id"] for m in good.json()["matches"]] == ["astronaut-0", "astronaut-1"] or {
        m["metadata"]["category"] for m in good.json()["matches"]
    } == {"people"}


def test_oversized_upload_is_refused(client: TestClient) -> None:
    big = Image.effect_noise((700, 700), 80).convert("RGB")
    data = jpeg(big)
    assert len(data) > 300_000
    resp = client.post("/api/search/image", files={"image": ("big.jpg", data)})
    assert resp.status_code == 413 and resp.json()["error"] == "ImageError"


def test_similarity_floor(ui_settings: Settings, ui_searcher: Searcher) -> None:
    app = build_app(ui_settings, UiOptions(min_score=0.9), searcher=ui_searcher)
    with TestClient(app) as c:
        hits = c.post("/api/search/id", json={"id": "coffee-0"}).json()["matches"]
    assert [m["id"] for m in hits] == ["coffee-1"]


def test_auth_protects_the_api_but_not_health(ui_settings: Settings, ui_searcher: Searcher) -> None:
    app = build_app(
        ui_settings, UiOptions(auth=("shop", "s3cret"), calibrate=False), searcher=ui_searcher
    )
    with TestClient(app) as c:
        assert c.get("/health").status_code == 200
        assert c.get("/api/info").status_code == 401
        assert c.get("/api/info", auth=("shop", "wrong")).status_code == 401
        assert c.get("/api/info", auth=("shop", "s3cret")).json()["live"]["count"] == 10
        assert c.get("/config").status_code == 401  # the Gradio page wants its login
        login = c.post("/login", data={"username": "shop", "password": "s3cret"})
        assert login.status_code == 200 and c.get("/config").status_code == 200


def test_openapi_schema_lists_the_endpoints(client: TestClient) -> None:
    paths = client.get("/api/openapi.json").json()["paths"]
    for path in (
        "/health",
        "/api/search/image",
        "/api/search/id",
        "/api/search/text",
        "/api/item",
        "/api/image",
        "/api/info",
        "/api/facets",
    ):
        assert path in paths


def test_milvus_outage_is_a_503_with_a_message(cache_dir) -> None:
    from .conftest import free_port

    settings = Settings.of(
        uri=f"http://127.0.0.1:{free_port()}", cache_dir=str(cache_dir), retries=0
    )
    with TestClient(build_app(settings)) as c:
        health = c.get("/health")
        assert health.status_code == 503 and "cannot connect to Milvus" in health.json()["error"]
        resp = c.post("/api/search/id", json={"id": "x"})
        assert resp.status_code == 503 and resp.json()["error"] == "StoreError"


class ViaTestClient(httpx.BaseTransport):
    """An httpx transport that hands each request to the in-process app."""

    def __init__(self, client: TestClient) -> None:
        self.client = client

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        resp = self.client.request(
            request.method, str(request.url), headers=request.headers, content=request.read()
        )
        headers = [(k, v) for k, v in resp.headers.items() if k.lower() != "content-encoding"]
        return httpx.Response(resp.status_code, headers=headers, content=resp.content)


def test_remote_client_in_process(client: TestClient, ui_catalog) -> None:
    """RemoteSearcher over the app in this process (the live-server tests do it over TCP)."""
    from search import ItemNotFound
    from search.client import RemoteSearcher

    with RemoteSearcher("http://testserver", transport=ViaTestClient(client)) as remote:
        info = remote.info()
        assert info.count == 2 * len(NAMES) and info.aliases == ("catalog",)
        assert remote.get("coffee-0").metadata["title"] == "coffee view 0"
        hits = remote.similar(str(ui_catalog.parent / "img" / "rocket-1.jpg"), limit=2)
        assert [m.id for m in hits] == ["rocket-1", "rocket-0"]
        assert remote.similar_by_id("rocket-0", limit=1)[0].id == "rocket-1"
        with pytest.raises(ItemNotFound):
            remote.get("no-such-item")
