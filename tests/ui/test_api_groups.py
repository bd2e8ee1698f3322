"""The API's one-result-per-product grouping and its per-result ``confident`` flag."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from search import Searcher, Settings
from search.calibration import Calibration
from ui.server import build_app
from ui.service import CatalogService, UiOptions


@pytest.fixture(scope="module")
def client(ui_settings: Settings, ui_searcher: Searcher) -> TestClient:
    return TestClient(build_app(ui_settings, UiOptions(calibrate=False), searcher=ui_searcher))


def test_group_by_gives_one_result_per_product_with_its_photo_count(client, ui_catalog) -> None:
    photo = (ui_catalog.parent / "img" / "coffee-1.jpg").read_bytes()
    plain = client.post("/api/search/image", files={"image": ("q.jpg", photo)}, data={"limit": 4})
    assert plain.status_code == 200, plain.text
    assert [m["id"] for m in plain.json()["matches"]][:2] == ["coffee-1", "coffee-0"]
    assert plain.json()["matches"][0]["photos"] is None

    grouped = client.post(
        "/api/search/image",
        files={"image": ("q.jpg", photo)},
        data={"limit": 4, "group_by": "product"},
    ).json()["matches"]
    groups = [m["group"] for m in grouped]
    assert groups[0] == "product=coffee" and grouped[0]["photos"] == 2
    assert len(groups) == len(set(groups)) == 4  # four products, not two photos of one

    by_id = client.post(
        "/api/search/id", json={"id": "rocket-0", "limit": 3, "group_by": "product"}
    ).json()["matches"]
    assert len({m["group"] for m in by_id}) == len(by_id) == 3
    bad = client.post("/api/search/id", json={"id": "rocket-0", "group_by": "a b"})
    assert bad.status_code == 422 and bad.json()["error"]


def test_confident_follows_the_calibrated_floor(client, monkeypatch) -> None:
    body = {"id": "rocket-0", "limit": 6}
    monkeypatch.setattr(CatalogService, "calibration", lambda self: None)
    uncalibrated = client.post("/api/search/id", json=body).json()["matches"]
    assert {m["confident"] for m in uncalibrated} == {None}  # no floor, no claim

    scores = sorted(m["score"] for m in uncalibrated)
    floor = (scores[1] + scores[-1]) / 2  # some results above, some below
    cal = Calibration(floor, 10, (0.9,) * 5, (0.3,) * 5, 0.9, 0.1)
    monkeypatch.setattr(CatalogService, "calibration", lambda self: cal)
    matches = client.post("/api/search/id", json=body).json()["matches"]
    assert [m["confident"] for m in matches] == [m["score"] >= floor for m in matches]
    assert True in {m["confident"] for m in matches} and False in {m["confident"] for m in matches}


def test_remote_searcher_returns_product_matches_like_the_library(client, ui_searcher) -> None:
    from search.client import RemoteSearcher
    from search.types import ProductMatch

    remote = RemoteSearcher("http://testserver")
    remote._http = client  # the TestClient speaks httpx
    here = ui_searcher.similar_by_id("rocket-0", limit=3, group_by="product")
    there = remote.similar_by_id("rocket-0", limit=3, group_by="product")
    assert all(isinstance(m, ProductMatch) for m in there)
    assert [(m.id, m.group, m.photos, m.ids) for m in there] == [
        (m.id, m.group, m.photos, m.ids) for m in here
    ]
