"""The Gradio handlers called directly: galleries, captions, browsing, paging, messages."""

from __future__ import annotations

import gradio as gr
import pytest
from PIL import Image

from search import MilvusStore, Searcher, Settings
from ui.app import ShopApp
from ui.service import CatalogService, UiOptions
from ui.state import ANY

from .conftest import NAMES


@pytest.fixture(scope="module")
def shop(ui_searcher: Searcher) -> ShopApp:
    return ShopApp(CatalogService(ui_searcher, UiOptions()))


def editor_value(img: Image.Image) -> dict:
    return {"background": img, "layers": [], "composite": img}


def test_photo_search_gallery_in_score_order_with_captions(shop: ShopApp, ui_catalog) -> None:
    photo = Image.open(ui_catalog.parent / "img" / "astronaut-0.jpg")
    gallery, message, state, more = shop.search_image(photo, 4, ANY, None, None)
    assert [m.id for m in state.matches][:2] == ["astronaut-0", "astronaut-1"]
    assert len(gallery) == 4 and isinstance(gallery[0][0], Image.Image)
    caption = gallery[0][1]
    assert caption.startswith("astronaut view 0 · people · 40.00 · score ")
    scores = [m.score for m in state.matches]
    assert scores == sorted(scores, reverse=True)
    assert "similar to your photo" in message and more["visible"] is True


def test_cropped_composite_is_what_is_searched(shop: ShopApp, ui_catalog) -> None:
    rocket = Image.open(ui_catalog.parent / "img" / "rocket-0.jpg").convert("RGB")
    coffee = Image.open(ui_catalog.parent / "img" / "coffee-0.jpg").convert("RGB")
    value = {"background": coffee, "layers": [], "composite": rocket}
    _, message, state, _ = shop.search_crop(value, 2, ANY, None, None)
    assert state.matches[0].id == "rocket-0" and "cropped region" in message
    gallery, _, state, _, offered = shop.on_photo(coffee, 2, ANY, None, None)
    assert state.matches[0].id == "coffee-0" and offered is coffee
    assert shop.on_photo(None, 2, ANY, None, None)[:3] == ([], "", None)


def test_click_runs_more_like_this_and_more_results_pages(shop: ShopApp, ui_catalog) -> None:
    photo = Image.open(ui_catalog.parent / "img" / "chelsea-0.jpg")
    _, _, state, _ = shop.search_image(photo, 3, ANY, None, None)
    picked = state.matches[1]
    evt = gr.SelectData(None, {"index": 1, "value": None, "selected": True})
    gallery, message, clicked, _ = shop.more_like(state, 3, ANY, None, None, evt)
    assert clicked.kind == "id" and clicked.value == picked.id
    assert picked.id not in [m.id for m in clicked.matches]
    assert clicked.matches == shop.searcher.similar_by_id(picked.id, limit=3)
    assert "More like" in message and len(gallery) == 3
    gallery2, _, paged, _ = shop.more_results(clicked)
    assert paged.offset == 3 and len(paged.matches) == 6 and len(gallery2) == 6
    assert paged.matches[3:] == shop.searcher.similar_by_id(picked.id, limit=3, offset=3)


def test_category_and_price_filters(shop: ShopApp, ui_catalog) -> None:
    photo = Image.open(ui_catalog.parent / "img" / "chelsea-0.jpg")
    _, _, state, _ = shop.search_image(photo, 10, "vehicles", None, None)
    assert {m.metadata["category"] for m in state.matches} == {"vehicles"}
    _, _, state, _ = shop.search_image(photo, 10, ANY, 20, 31)
    assert state.matches and all(20 <= m.metadata["price"] <= 31 for m in state.matches)


def test_errors_become_readable_messages(shop: ShopApp) -> None:
    with pytest.raises(gr.Error, match="photo first"):
        shop.search_image(None, 5, ANY, None, None)
    with pytest.raises(gr.Error, match="photo first"):
        shop.search_crop(None, 5, ANY, None, None)
    with pytest.raises(gr.Error, match="Text search is not available"):
        shop.search_text("red shoes", 5, ANY, None, None)
    with pytest.raises(gr.Error, match="no longer in the catalog"):
        shop.similar_by_id("gone", 3)
    assert [m["id"] for m in shop.similar_by_id("coffee-0", 1)] == ["coffee-1"]


def test_page_load_fills_status_filters_and_hides_text(shop: ShopApp) -> None:
    status, category, lo, hi, text_box, note = shop.on_load()
    assert "**catalog**" in status and f"{2 * len(NAMES)} items" in status
    assert category["choices"] == [ANY, "animals", "kitchen", "people", "vehicles"]
    assert (lo["value"], hi["value"]) == (10.0, 51.0) == shop.price_range
    assert shop._filters(ANY, 10.0, 51.0) is None
    assert shop._filters("kitchen", 12, 51.0) == {"category": "kitchen", "price": {"gte": 12.0}}
    assert text_box["visible"] is False and "image-only" in note


def test_corrupt_upload_is_a_gr_error(tmp_path) -> None:
    from gradio.data_classes import FileData

    editor = gr.ImageEditor(type="pil", transforms=("crop",), render=False)
    from ui.messages import guard_preprocess

    guard_preprocess(editor)
    junk = tmp_path / "notes.png"
    junk.write_text("this is a text file, not a picture")
    payload = {
        "background": FileData(path=str(junk)),
        "layers": [],
        "composite": FileData(path=str(junk)),
    }
    with pytest.raises(gr.Error, match="not an image we can read"):
        editor.preprocess(editor.data_model(**payload))


def test_similarity_floor_and_empty_catalog_messages(
    ui_searcher: Searcher, settings: Settings, embedder
) -> None:
    strict = ShopApp(CatalogService(ui_searcher, UiOptions(min_score=0.95)))
    noise = Image.effect_noise((200, 200), 60).convert("RGB")
    gallery, message, state, more = strict.search_image(noise, 5, ANY, None, None)
    assert gallery == [] and state.matches == []
    assert "No product is similar enough" in message and "similarity floor 0.95" in message
    assert more["visible"] is False

    store = MilvusStore(settings)
    store.create("catalog__empty", embedder.info)
    store.set_alias("catalog", "catalog__empty")
    empty = ShopApp(CatalogService(Searcher(settings, store=store, embedder=embedder)))
    status = empty.on_load()[0]
    assert "0 items" in status and "empty" in status
    _, message, _, _ = empty.search_image(noise, 5, ANY, None, None)
    assert "catalog is empty" in message


def test_milvus_outage_shows_a_message(cache_dir) -> None:
    from .conftest import free_port

    settings = Settings(uri=f"http://127.0.0.1:{free_port()}", cache_dir=str(cache_dir), retries=0)
    down = ShopApp(CatalogService(Searcher(settings)))
    status = down.on_load()[0]
    assert "cannot connect to Milvus" in status
    with pytest.raises(gr.Error, match="unavailable right now"):
        down.similar_by_id("x", 3)


def test_text_search_shows_for_a_model_with_a_text_tower(shop: ShopApp, monkeypatch) -> None:
    from ui.service import Status

    real = shop.service.status()
    monkeypatch.setattr(
        shop.service, "status", lambda: Status(**{**real.__dict__, "has_text": True})
    )
    _, _, _, _, text_box, note = shop.on_load()
    assert text_box["visible"] is True and note == ""


def test_missing_image_keeps_its_gallery_slot(shop: ShopApp) -> None:
    from search import Match

    gone = Match("ghost", 0.5, "/nonexistent/ghost.jpg", {"title": "Ghost"})
    real = shop.searcher.get("coffee-0")
    items = shop._gallery([gone, real])
    assert len(items) == 2 and items[0][1].endswith("image unavailable")
    assert items[1][1].startswith("coffee view 0")
