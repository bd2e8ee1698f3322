"""The Gradio handlers called directly: tiles, crop, grouping, floor, filters, browsing."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import gradio as gr
import pytest
from PIL import Image

from search import ImageError, MilvusStore, Searcher, Settings
from ui.app import NEAREST, ShopApp
from ui.images import UploadJanitor
from ui.service import CatalogService, UiOptions
from ui.state import ANY

from .conftest import NAMES, SHOP_URL


@pytest.fixture(scope="module")
def shop(ui_searcher: Searcher, tmp_path_factory: pytest.TempPathFactory) -> ShopApp:
    """The page with the floor off (min_score 0): every product is a "close" one."""
    app = ShopApp(CatalogService(ui_searcher, UiOptions(min_score=0.0)))
    app.uploads = UploadJanitor(tmp_path_factory.mktemp("gradio-uploads"), grace_s=0)
    return app


def n_tiles(html: str) -> int:
    return len(re.findall(r'class="tile( far)?"', html))


def uploaded(shop: ShopApp, source: Path, name: str = "photo.jpg") -> str:
    """A copy of ``source`` where Gradio puts uploads (a hash-named folder)."""
    folder = Path(shop.uploads.root) / "0123abcd"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / name
    shutil.copy(source, target)
    return str(target)


def two_products(ui_catalog: Path, tmp_path: Path) -> Path:
    """One photo with a coffee cup on the left and a rocket on the right."""
    img = ui_catalog.parent / "img"
    left = Image.open(img / "coffee-0.jpg").convert("RGB").resize((400, 400))
    right = Image.open(img / "rocket-0.jpg").convert("RGB").resize((400, 400))
    both = Image.new("RGB", (800, 400), "white")
    both.paste(left, (0, 0))
    both.paste(right, (400, 0))
    path = tmp_path / "two.jpg"
    both.save(path, quality=92)
    return path


def test_new_photo_shows_one_tile_per_product_and_deletes_the_upload(
    shop: ShopApp, ui_catalog: Path
) -> None:
    path = uploaded(shop, ui_catalog.parent / "img" / "astronaut-0.jpg")
    html, message, state, more, back, stage, query = shop.on_photo(path, 12, ANY, None, None)
    groups = [m.group for m in state.matches]
    assert len(groups) == len(set(groups)) == len(NAMES)  # 10 photos, 5 products
    assert state.matches[0].id == "astronaut-0" and state.matches[0].photos == 2
    assert n_tiles(html) == len(NAMES) and "2 photos matched" in html
    assert "similar to your photo" in message and back["visible"] is False
    assert "crop-stage" in stage and query is None  # the photo moved to the crop tool
    assert not Path(path).exists() and not Path(path).parent.exists()  # upload deleted
    assert max(state.photo.size) <= 1024


def test_upload_janitor_waits_its_grace_and_spares_a_newer_upload(tmp_path: Path) -> None:
    janitor = UploadJanitor(tmp_path, grace_s=30)
    shared = tmp_path / "abc" / "same.jpg"  # Gradio: one file per content hash
    shared.parent.mkdir()
    shared.write_bytes(b"x")
    t0 = shared.stat().st_mtime + 1
    janitor.discard(shared, now=t0)  # shopper A has read it
    assert shared.exists() and janitor.sweep(now=t0 + 29) == []  # B may still be queued
    assert janitor.sweep(now=t0 + 30) == [str(shared)] and not shared.parent.exists()
    shared.parent.mkdir()
    shared.write_bytes(b"x")
    janitor.discard(shared, now=shared.stat().st_mtime - 5)  # written again after scheduling
    assert janitor.sweep(now=shared.stat().st_mtime + 60) == [] and shared.exists()
    outside = tmp_path.parent / "not-an-upload.jpg"
    outside.write_bytes(b"x")
    janitor.discard(outside, now=0)
    assert janitor.sweep(now=100) == [] and outside.exists()  # only Gradio's upload folder


def test_big_photo_is_decoded_small_and_the_api_pixel_limit_holds(
    shop: ShopApp, ui_searcher: Searcher, embedder, tmp_path: Path, monkeypatch
) -> None:
    import search.images.upload as upload

    big = tmp_path / "phone.jpg"
    Image.effect_noise((4000, 3000), 40).convert("RGB").save(big, quality=85)
    calls = []
    real = upload.open_image
    monkeypatch.setattr(upload, "open_image", lambda *a, **kw: calls.append(kw) or real(*a, **kw))
    _, _, state, *_ = shop.on_photo(uploaded(shop, big), 3, ANY, None, None)
    # JPEG draft at the smallest scale keeping a 720 px short side: 1/4 for 4000 x 3000
    assert calls and calls[0]["draft_size"] == upload.QUERY_MIN_SIDE == 720
    assert calls[0]["max_pixels"] == ui_searcher.settings.indexing.max_image_pixels
    assert state.photo.size == (1000, 750)
    monkeypatch.undo()

    small_limit = ui_searcher.settings.replace(max_image_pixels=100_000)
    strict = Searcher(small_limit, store=ui_searcher.store, embedder=embedder)
    app = ShopApp(CatalogService(strict, UiOptions(min_score=0.0)))
    app.uploads = shop.uploads
    photo = tmp_path / "400.png"
    Image.new("RGB", (400, 400), "red").save(photo)  # 160,000 px
    with pytest.raises(gr.Error, match="too many pixels"):
        app.on_photo(uploaded(app, photo, "400.png"), 3, ANY, None, None)
    with pytest.raises(ImageError, match="exceeds the limit"):  # the API's path, same limit
        strict.similar(photo.read_bytes(), limit=3)


def test_searches_share_one_queue_of_the_configured_concurrency(ui_searcher: Searcher) -> None:
    demo = ShopApp(CatalogService(ui_searcher, UiOptions(concurrency=3))).build()
    names = {"on_photo", "search_photo", "search_crop", "more_like", "more_results", "refilter"}
    fns = [fn for fn in demo.fns.values() if fn.name in names]
    assert {fn.name for fn in fns} == names
    assert {fn.concurrency_limit for fn in fns} == {3}
    assert {fn.concurrency_id for fn in fns} == {"search"}
    assert demo.delete_cache is not None  # Gradio also sweeps its temporary files


def test_crop_searches_only_the_region(shop: ShopApp, ui_catalog: Path, tmp_path: Path) -> None:
    path = uploaded(shop, two_products(ui_catalog, tmp_path))
    _, _, whole, *_ = shop.on_photo(path, 5, ANY, None, None)
    _, msg, left, *_ = shop.search_crop(whole, 5, ANY, None, None, "0.02,0.02,0.48,0.98")
    _, _, right, *_ = shop.search_crop(whole, 5, ANY, None, None, "0.52,0.02,0.98,0.98")
    assert left.matches[0].group == "product=coffee" and "cropped region" in msg
    assert right.matches[0].group == "product=rocket"
    assert left.value.size[0] < whole.photo.size[0] / 2 + 2  # only the region was searched
    assert [m.score for m in left.matches] != [m.score for m in whole.matches]
    with pytest.raises(gr.Error, match="Drag over the product"):
        shop.search_crop(whole, 5, ANY, None, None, "")
    with pytest.raises(gr.Error, match="Upload a photo first"):
        shop.search_crop(None, 5, ANY, None, None, "0,0,1,1")


def test_tiles_are_readable_with_link_count_and_full_title(shop: ShopApp) -> None:
    from search.searcher import ProductMatch
    from ui import tiles

    long = "A very long product title " * 6 + "<b>&"
    m = ProductMatch("x1", 0.81234, "", {"title": long, "price": 12.5, "url": SHOP_URL + "/x"})
    m = ProductMatch(**{**m.__dict__, "photos": 3})
    html = tiles.tile(0, m, "data:image/jpeg;base64,AAAA", floor=0.5)
    assert 'title="A very long product title' in html and "&lt;b&gt;&amp;" in html
    assert "<b>&" not in html  # escaped, never markup
    assert "12.50" in html and "score 0.812" in html and "3 photos matched" in html
    assert f'href="{SHOP_URL}/x" target="_blank" rel="noopener noreferrer"' in html
    plain = tiles.tile(1, ProductMatch("y", 0.2, "", {"title": "Y"}), None, floor=0.5)
    assert "href" not in plain and "tile far" in plain and "image unavailable" in plain


@pytest.mark.slow
def test_floor_is_calibrated_from_the_catalog_and_says_no_close_match(
    ui_searcher: Searcher, shop: ShopApp, ui_catalog: Path
) -> None:
    from search import calibration

    service = CatalogService(ui_searcher, UiOptions())
    cal = service.calibrate(samples=10)
    assert cal is not None and cal.samples == 10
    assert max(cal.nonmatching) < cal.floor < min(cal.matching)
    assert calibration.stored(ui_searcher) == cal == service.calibration()
    assert service.page_floor == cal.floor
    page = ShopApp(service)
    page.uploads = shop.uploads
    red = Image.new("RGB", (300, 300), (200, 20, 20))
    red_path = Path(shop.uploads.root) / "red.png"
    red.save(red_path)
    html, message, state, more, _, _, _ = page.on_photo(str(red_path), 12, ANY, None, None)
    assert "No close match" in message and 0 < len(state.matches) <= NEAREST
    assert more["visible"] is False and html.count("tile far") == len(state.matches)
    coffee = uploaded(page, ui_catalog.parent / "img" / "coffee-0.jpg")
    _, message, state, *_ = page.on_photo(coffee, 12, ANY, None, None)
    assert [m.group for m in state.matches] == ["product=coffee"]  # no unrelated padding
    assert "No close match" not in message
    override = CatalogService(ui_searcher, UiOptions(min_score=0.0))  # --min-score 0
    assert override.page_floor == 0.0


def test_category_change_reruns_and_min_above_max_is_refused(
    shop: ShopApp, ui_catalog: Path
) -> None:
    _, _, state, *_ = shop.on_photo(
        uploaded(shop, ui_catalog.parent / "img" / "chelsea-0.jpg"), 10, ANY, None, None
    )
    assert {m.metadata["category"] for m in state.matches} != {"vehicles"}
    _, _, again, *_ = shop.refilter(state, 10, "vehicles", None, None)
    assert again.matches and {m.metadata["category"] for m in again.matches} == {"vehicles"}
    _, _, priced, *_ = shop.refilter(state, 10, ANY, 20, 31)
    assert priced.matches and all(20 <= m.metadata["price"] <= 31 for m in priced.matches)
    with pytest.raises(gr.Error, match=r"minimum price \(40\) is above the maximum price \(20\)"):
        shop.refilter(state, 10, ANY, 40, 20)
    assert all(
        isinstance(x, type(gr.skip())) for x in shop.refilter(None, 10, "kitchen", None, None)
    )


def test_more_like_this_names_the_product_pages_in_place_and_goes_back(
    shop: ShopApp, ui_catalog: Path
) -> None:
    path = uploaded(shop, ui_catalog.parent / "img" / "chelsea-0.jpg")
    _, _, photo_state, *_ = shop.on_photo(path, 2, ANY, None, None)
    picked = photo_state.matches[1]
    evt = gr.SelectData(None, {"index": 1, "value": picked.id, "selected": True})
    html, message, clicked, more, back = shop.more_like(photo_state, 2, ANY, None, None, evt)
    assert message.startswith(f"More like “{picked.metadata['title']}”")
    assert clicked.kind == "id" and back["visible"] is True
    assert picked.group not in [m.group for m in clicked.matches]  # its own product left out
    html2, message2, paged, _, _ = shop.more_results(clicked)
    assert paged.offset == 2 and "results 3–4" in message2
    assert not {m.id for m in paged.matches} & {m.id for m in clicked.matches}  # replaced
    assert html2 != html
    _, message3, home, _, back3 = shop.search_photo(paged, 2, ANY, None, None)
    assert [m.id for m in home.matches] == [m.id for m in photo_state.matches]
    assert "similar to your photo" in message3 and back3["visible"] is False


def test_status_line_is_for_shoppers_and_details_go_to_about(shop: ShopApp) -> None:
    status, category, lo, hi, text_box, about = shop.on_load()
    assert status == f"Search {2 * len(NAMES)} items by photo: upload, paste or take a picture."
    for internal in ("catalog__", "efficientnet", "1280", "checkpoint", "**catalog**"):
        assert internal not in status
    assert "efficientnet-lite0" in about and "`catalog`" in about and "floor" in about
    assert category["choices"] == [ANY, "animals", "kitchen", "people", "vehicles"]
    assert (lo["value"], hi["value"]) == (10.0, 51.0) == shop.price_range
    assert shop._filters(ANY, 10.0, 51.0) is None
    assert shop._filters("kitchen", 12, 51.0) == {"category": "kitchen", "price": {"gte": 12.0}}
    assert text_box["visible"] is False


def test_no_collection_and_empty_catalog_say_it_plainly(
    ui_searcher: Searcher, settings: Settings, embedder
) -> None:
    store = MilvusStore(settings)
    missing = Searcher(settings.replace(collection="nothing_here"), store=store, embedder=embedder)
    status = ShopApp(CatalogService(missing)).on_load()[0]
    assert status == "🛍️ This shop's catalog is not available yet. Please come back soon."
    store.create("catalog__empty", embedder.info)
    store.set_alias("catalog", "catalog__empty")
    empty = ShopApp(CatalogService(Searcher(settings, store=store, embedder=embedder)))
    assert "catalog is empty" in empty.on_load()[0]
    state = empty._photo_state(Image.new("RGB", (64, 64)), 5, ANY, None, None)
    assert "catalog is empty" in empty._answer(state)[1]


def test_milvus_outage_shows_a_message(cache_dir) -> None:
    from .conftest import free_port

    settings = Settings.of(
        uri=f"http://127.0.0.1:{free_port()}", cache_dir=str(cache_dir), retries=0
    )
    down = ShopApp(CatalogService(Searcher(settings)))
    status, *_, about = down.on_load()
    assert status == "⚠️ Search is unavailable right now. Please try again in a moment."
    assert "cannot connect to Milvus" in about
    with pytest.raises(gr.Error, match="unavailable right now"):
        down.similar_by_id("x", 3)


def test_errors_become_readable_messages(shop: ShopApp) -> None:
    with pytest.raises(gr.Error, match="photo first"):
        shop.search_photo(None, 5, ANY, None, None)
    with pytest.raises(gr.Error, match="Text search is not available"):
        shop.search_text("red shoes", 5, ANY, None, None)
    with pytest.raises(gr.Error, match="no longer in the catalog"):
        shop.similar_by_id("gone", 3)
    assert [m["id"] for m in shop.similar_by_id("coffee-0", 1)] == ["coffee-1"]


def test_named_search_image_endpoint_keeps_its_gallery(shop: ShopApp, ui_catalog: Path) -> None:
    path = uploaded(shop, ui_catalog.parent / "img" / "coffee-0.jpg")
    gallery, message = shop.search_image(path, 4, ANY, None, None)
    assert len(gallery) == 4 and gallery[0][1].startswith("coffee view 0 · kitchen · 20.00")
    assert Image.open(gallery[0][0]).size[0] <= shop.thumbs.px  # a thumbnail file, written once
    assert "4 result(s)" in message and not Path(path).exists()


def test_corrupt_upload_is_a_gr_error(tmp_path) -> None:
    from gradio.data_classes import ImageData

    from ui.messages import guard_preprocess

    image = gr.Image(type="filepath", render=False)
    guard_preprocess(image)
    junk = tmp_path / "notes.png"
    junk.write_text("this is a text file, not a picture")
    with pytest.raises(gr.Error, match="not an image we can read"):
        image.preprocess(ImageData(path=str(junk), orig_name="notes.png"))


def test_text_search_shows_for_a_model_with_a_text_tower(shop: ShopApp, monkeypatch) -> None:
    from ui.service import Status

    real = shop.service.status()
    monkeypatch.setattr(
        shop.service, "status", lambda: Status(**{**real.__dict__, "has_text": True})
    )
    assert shop.on_load()[4]["visible"] is True


def test_missing_image_keeps_its_tile(shop: ShopApp) -> None:
    from search import Match
    from ui import tiles

    gone = Match("ghost", 0.5, "/nonexistent/ghost.jpg", {"title": "Ghost"})
    real = shop.searcher.get("coffee-0")
    html = tiles.grid([gone, real], shop.thumbs)
    assert n_tiles(html) == 2 and "image unavailable" in html
    assert 'data-id="coffee-0"' in html and "data:image/jpeg;base64," in html


def test_an_rgba_png_upload_reaches_the_handler_as_uploaded(
    shop: ShopApp, ui_catalog: Path, tmp_path: Path
) -> None:
    """Gradio's Image preprocess hands the uploaded file itself to the handler, whatever its
    mode (it used to decode, convert and re-save an RGBA PNG before the handler ran)."""
    from gradio.data_classes import ImageData

    blocks = shop.build()
    query = next(b for b in blocks.blocks.values() if getattr(b, "elem_id", None) == "query")
    shot = tmp_path / "shot.png"
    coffee = Image.open(ui_catalog.parent / "img" / "coffee-0.jpg").convert("RGBA")
    coffee.save(shot)
    path = uploaded(shop, shot, "shot.png")
    assert query.preprocess(ImageData(path=path, orig_name="shot.png")) == path
    html, _, state, *_ = shop.on_photo(path, 3, ANY, None, None)
    assert state.photo.mode == "RGB" and state.matches[0].id.startswith("coffee-")
    assert 'data-id="coffee-' in html
