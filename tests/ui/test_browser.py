"""A shopper in a real headless Chromium: upload, crop, tiles, browse, filters, phone width.

The two screenshots of docs/ui.md (ui-desktop.png, ui-phone.png) are taken here, on the test
catalog: into test-artifacts/ (or $VSEARCH_TEST_ARTIFACTS), and into docs/img/ only with
VSEARCH_UPDATE_DOCS_IMAGES=1, so that a test run leaves the checkout as it found it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from .conftest import ARTIFACTS, SHOP_URL

pytestmark = [pytest.mark.browser, pytest.mark.slow]
DOCS_IMG = (
    Path(__file__).parents[2] / "docs" / "img"
    if os.environ.get("VSEARCH_UPDATE_DOCS_IMAGES") == "1"
    else ARTIFACTS
)


def titles(page) -> list[str]:
    return page.locator("#results .tile-title").all_inner_texts()


def tile_ids(page) -> list[str]:
    return page.eval_on_selector_all("#results .tile", "ts => ts.map(t => t.dataset.id)")


def upload(page, path) -> None:
    page.locator("#query input[type=file]").set_input_files(str(path))


def wait_for_message(page, text: str) -> None:
    page.wait_for_function(
        "t => (document.querySelector('#message')?.innerText || '').includes(t)", arg=text
    )


def reload_ready(page) -> None:
    """Reload the page and wait until the app has loaded (its status line counts the items):
    a file set on the input while the page is still starting up can be lost, which no
    shopper can do, but a test under load can."""
    page.reload(wait_until="load")
    page.wait_for_function("(document.querySelector('#status')?.innerText || '').includes('items')")


def search_photo(page, path, expect: str = "similar to your photo") -> None:
    upload(page, path)
    wait_for_message(page, expect)
    page.locator("#results .tile").first.wait_for()


def drag(page, box: tuple[float, float, float, float]) -> None:
    """Draw a crop box on the photo, in fractions of its size."""
    img = page.locator("#crop .crop-stage img")
    img.wait_for()
    bb = img.bounding_box()
    x0, y0, x1, y1 = box
    page.mouse.move(bb["x"] + bb["width"] * x0, bb["y"] + bb["height"] * y0)
    page.mouse.down()
    page.mouse.move(bb["x"] + bb["width"] * x1, bb["y"] + bb["height"] * y1, steps=6)
    page.mouse.up()


@pytest.fixture(scope="module")
def two_products(ui_catalog, tmp_path_factory) -> Path:
    """A photo with a coffee cup on the left and a rocket on the right."""
    img = ui_catalog.parent / "img"
    both = Image.new("RGB", (800, 400), "white")
    both.paste(Image.open(img / "coffee-0.jpg").convert("RGB").resize((400, 400)), (0, 0))
    both.paste(Image.open(img / "rocket-0.jpg").convert("RGB").resize((400, 400)), (400, 0))
    path = tmp_path_factory.mktemp("photos") / "two.jpg"
    both.save(path, quality=92)
    return path


def test_one_readable_tile_per_product_with_link_and_desktop_screenshot(
    shop_page, ui_catalog
) -> None:
    status = shop_page.inner_text("#status")
    assert status.startswith("Search 10 items by photo")
    for internal in ("catalog", "efficientnet", "1280", "checkpoint", "image-only"):
        assert internal not in status.lower()
    search_photo(shop_page, ui_catalog.parent / "img" / "coffee-0.jpg")
    assert titles(shop_page)[0] == "coffee view 0"
    first = shop_page.locator("#results .tile").first
    assert "2 photos matched" in first.inner_text() and "score 1.000" in first.inner_text()
    assert "20.00" in first.inner_text()
    assert len(set(tile_ids(shop_page))) == len(tile_ids(shop_page))
    link = first.locator("a.tile-link")
    assert link.get_attribute("href") == f"{SHOP_URL}/coffee"
    assert link.get_attribute("target") == "_blank"
    assert first.locator(".tile-title").get_attribute("title") == "coffee view 0"
    # nothing clipped sideways in a tile, and the grid does not scroll inside itself
    clipped = shop_page.eval_on_selector_all(
        "#results .tile-title, #results .tile-meta span",
        "els => els.filter(e => e.scrollWidth > e.clientWidth + 1).length",
    )
    assert clipped == 0
    inner_scroll = shop_page.eval_on_selector_all(
        "#results, #results *",
        "els => els.filter(e => e.scrollHeight > e.clientHeight + 2 && "
        "['auto', 'scroll'].includes(getComputedStyle(e).overflowY)).length",
    )
    assert inner_scroll == 0
    assert shop_page.outside_requests == []  # fonts, scripts, images: all from the server
    drag(shop_page, (0.1, 0.1, 0.8, 0.9))
    DOCS_IMG.mkdir(parents=True, exist_ok=True)
    DOCS_IMG.mkdir(parents=True, exist_ok=True)
    shop_page.screenshot(path=str(DOCS_IMG / "ui-desktop.png"), full_page=True)


def test_crop_searches_the_region_drawn(shop_page, two_products) -> None:
    search_photo(shop_page, two_products)
    whole = tile_ids(shop_page)
    drag(shop_page, (0.03, 0.05, 0.47, 0.95))
    shop_page.click("#search-crop")
    wait_for_message(shop_page, "cropped region")
    left = tile_ids(shop_page)
    assert left[0].startswith("coffee-")
    drag(shop_page, (0.53, 0.05, 0.97, 0.95))
    shop_page.click("#search-crop")
    shop_page.wait_for_function(
        "() => (document.querySelector('#results .tile')?.dataset.id || '').startsWith('rocket-')"
    )
    assert tile_ids(shop_page)[0].startswith("rocket-") and len(whole) == 2


def test_plain_image_gets_no_close_match_instead_of_padding(shop_page, tmp_path) -> None:
    red = tmp_path / "red.png"
    Image.new("RGB", (400, 300), (210, 25, 25)).save(red)
    upload(shop_page, red)
    wait_for_message(shop_page, "No close match")
    assert 0 < len(tile_ids(shop_page)) <= 4
    assert not shop_page.is_visible("#more")


def test_more_like_this_names_it_unhighlights_and_goes_back(shop_page, ui_catalog) -> None:
    search_photo(shop_page, ui_catalog.parent / "img" / "chelsea-0.jpg")
    before = tile_ids(shop_page)
    shop_page.locator("#results .tile-pick").first.click()
    wait_for_message(shop_page, "More like “chelsea view 0”")
    assert tile_ids(shop_page) != before and not any(
        i.startswith("chelsea") for i in tile_ids(shop_page)
    )
    focused = shop_page.evaluate("() => !!document.activeElement?.closest('#results .tile')")
    assert focused is False
    assert shop_page.locator("#results .tile.selected, #results .selected").count() == 0
    shop_page.click("#back")
    wait_for_message(shop_page, "similar to your photo")
    assert tile_ids(shop_page) == before


def test_more_results_replaces_the_page(shop_page, two_products) -> None:
    shop_page.locator("#top-k input[type=number]").fill("1")
    shop_page.locator("#top-k input[type=number]").press("Enter")
    search_photo(shop_page, two_products)
    first = tile_ids(shop_page)
    assert len(first) == 1
    shop_page.click("#more")
    wait_for_message(shop_page, "results 2–2")
    second = tile_ids(shop_page)
    assert len(second) == 1 and second != first


def test_category_change_reruns_and_bad_price_range_is_refused(shop_page, ui_catalog) -> None:
    search_photo(shop_page, ui_catalog.parent / "img" / "coffee-0.jpg")
    assert tile_ids(shop_page)[0].startswith("coffee-")
    shop_page.click("#category input")
    shop_page.get_by_role("option", name="vehicles").click()
    shop_page.wait_for_function(
        "() => [...document.querySelectorAll('#results .tile')].every("
        "t => /^(rocket|stereo_motorcycle)-/.test(t.dataset.id))"
        " && document.querySelectorAll('#results .tile').length > 0"
    )
    shop_page.locator("#price-min input").fill("40")
    shop_page.locator("#price-max input").fill("20")
    shop_page.locator("#price-max input").press("Enter")
    toast = shop_page.locator(".toast-body", has_text="minimum price")
    toast.wait_for()
    assert "above the maximum price" in toast.inner_text()
    assert "similar" not in toast.inner_text()


def test_phone_width_results_before_filters_and_screenshot(chromium, live_server, ui_catalog):
    page = chromium.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2)
    page.set_default_timeout(60_000)
    try:
        page.goto(live_server.url + "/", wait_until="load")
        page.wait_for_function(
            "(document.querySelector('#status')?.innerText || '').includes('items')"
        )
        search_photo(page, ui_catalog.parent / "img" / "astronaut-0.jpg")
        photo, results, filters = (
            page.locator(s).bounding_box() for s in ("#photo-col", "#results", "#filters")
        )
        assert photo["y"] < results["y"] < filters["y"]
        clipped = page.eval_on_selector_all(
            "#results .tile-title, #results .tile-meta span",
            "els => els.filter(e => e.scrollWidth > e.clientWidth + 1).length",
        )
        assert clipped == 0
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(DOCS_IMG / "ui-phone.png"), full_page=True)
    finally:
        page.close()


def test_photo_over_the_pixel_limit_is_refused_like_the_api(shop_page, live_server, tmp_path):
    import httpx

    huge = tmp_path / "huge.png"
    Image.new("RGB", (8200, 8200), (240, 240, 240)).save(huge, optimize=False)  # 67 MP
    assert huge.stat().st_size < 1024 * 1024  # under the upload limit: pixels decide
    api = httpx.post(
        live_server.url + "/api/search/image", files={"image": huge.open("rb")}, timeout=60
    )
    assert api.status_code == 422 and "exceeds the limit" in api.json()["detail"]
    upload(shop_page, huge)
    toast = shop_page.locator(".toast-body", has_text="too many pixels")
    toast.wait_for()
    assert "smaller photo" in toast.inner_text()
    assert tile_ids(shop_page) == []


def test_text_file_upload_shows_a_clear_error(shop_page, tmp_path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("a shopping list, not a photo")
    upload(shop_page, notes)
    toast = shop_page.locator(".toast-body").first
    toast.wait_for()
    assert "Invalid file type" in toast.inner_text() and "image" in toast.inner_text()
    fake = tmp_path / "holiday.jpg"
    fake.write_text("this is text wearing a .jpg name")
    reload_ready(shop_page)
    upload(shop_page, fake)
    toast = shop_page.locator(".toast-body", has_text="not an image we can read")
    toast.wait_for()
    assert "JPEG, PNG or WebP" in toast.inner_text()
    assert tile_ids(shop_page) == []


def test_oversized_photo_shows_a_clear_error(shop_page, tmp_path) -> None:
    big = tmp_path / "huge.png"
    Image.effect_noise((900, 900), 90).convert("RGB").save(big)  # ~2 MB, limit is 1 MB
    assert big.stat().st_size > 1024 * 1024
    upload(shop_page, big)
    toast = shop_page.locator(".toast-body").first
    toast.wait_for()
    text = toast.inner_text().lower()
    assert "size" in text or "large" in text, text
    assert tile_ids(shop_page) == []


@pytest.fixture(scope="module")
def down_server(tmp_path_factory, cache_dir):
    """A server whose Milvus is not there (a closed port): it must still serve the page."""
    from .conftest import free_port, start_server, stop_server

    root = tmp_path_factory.mktemp("ui-down")
    server = start_server(f"http://127.0.0.1:{free_port()}", cache_dir, root / "serve.log")
    try:
        yield server
    finally:
        stop_server(server.proc)


def test_milvus_outage_is_a_message_not_a_blank_page(chromium, down_server, ui_catalog, request):
    from .conftest import ARTIFACTS

    page = chromium.new_page(viewport={"width": 1300, "height": 1000})
    page.set_default_timeout(60_000)
    try:
        page.goto(down_server.url + "/", wait_until="load")
        page.wait_for_function(
            "(document.querySelector('#status')?.innerText || '').includes('unavailable')"
        )
        assert "Milvus" not in page.inner_text("#status")
        page.get_by_text("About this search").click()
        # the panel opens asynchronously: wait for its text rather than reading it at once
        page.locator("#about", has_text="cannot connect to Milvus").wait_for()
        upload(page, ui_catalog.parent / "img" / "coffee-0.jpg")
        toast = page.locator(".toast-body", has_text="unavailable right now")
        toast.wait_for()
        assert "try again" in toast.inner_text()
        assert tile_ids(page) == []
    except Exception:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
        raise
    finally:
        page.close()


def test_big_photo_is_shrunk_in_the_browser_and_crop_still_works(
    shop_page, two_products, tmp_path
) -> None:
    """The page shrinks a big photo before uploading it (forced here: on a loopback host it
    leaves the photo to the server); the crop tool works on the shrunk photo, and the
    server's pixel limit still refuses what it refused before."""
    big = tmp_path / "two-big.jpg"
    Image.open(two_products).resize((2400, 1200), Image.Resampling.BICUBIC).save(big, quality=90)
    assert big.stat().st_size < 1024 * 1024  # under the live server's upload limit
    shop_page.evaluate("() => { window.vsearchShrinkAlways = true; }")
    search_photo(shop_page, big)
    shop_page.wait_for_function("() => !document.querySelector('#query.vsearch-busy')")
    shrink = shop_page.evaluate("() => window.vsearchShrink || null")
    assert shrink is not None, "the photo went up unshrunk"
    assert (shrink["width"], shrink["height"]) == (1024, 512)
    assert shrink["to"] < shrink["from"] == big.stat().st_size
    drag(shop_page, (0.03, 0.05, 0.47, 0.95))
    shop_page.click("#search-crop")
    wait_for_message(shop_page, "cropped region")
    assert tile_ids(shop_page)[0].startswith("coffee-")
    drag(shop_page, (0.53, 0.05, 0.97, 0.95))
    shop_page.click("#search-crop")
    shop_page.wait_for_function(
        "() => (document.querySelector('#results .tile')?.dataset.id || '').startsWith('rocket-')"
    )
    # a phone photo stored sideways (EXIF orientation 6) is shrunk upright, as the server
    # would read it
    sideways = tmp_path / "sideways.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.open(big).save(sideways, quality=90, exif=exif.tobytes())
    reload_ready(shop_page)
    shop_page.evaluate("() => { window.vsearchShrinkAlways = true; }")
    search_photo(shop_page, sideways)
    shrink = shop_page.evaluate("() => window.vsearchShrink || null")
    assert shrink is not None and (shrink["width"], shrink["height"]) == (512, 1024)
    huge = tmp_path / "huge.png"
    Image.new("RGB", (8200, 8200), (240, 240, 240)).save(huge, optimize=False)  # 67 MP
    reload_ready(shop_page)
    shop_page.evaluate("() => { window.vsearchShrinkAlways = true; }")
    upload(shop_page, huge)
    shop_page.locator(".toast-body", has_text="too many pixels").wait_for()
    assert shop_page.evaluate("() => window.vsearchShrink || null") is None
    # the upload's preview, hidden while its search ran, is back beside the refusal
    shop_page.wait_for_function("() => !document.querySelector('#query.vsearch-busy')")
    assert shop_page.locator("#query .image-frame img").first.is_visible()
