"""A shopper in a real headless Chromium: upload, browse, filter, bad uploads."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def captions(page) -> list[str]:
    return page.locator("#results .caption-label").all_inner_texts()


def upload(page, path) -> None:
    page.locator("#query input[type=file]").set_input_files(str(path))


def wait_for_message(page, text: str) -> None:
    page.wait_for_function(
        "t => (document.querySelector('#message')?.innerText || '').includes(t)", arg=text
    )


def test_upload_a_catalog_photo_and_see_it_first(shop_page, ui_catalog) -> None:
    status = shop_page.inner_text("#status")
    assert "catalog" in status and "10 items" in status and "efficientnet-lite0" in status
    assert "image-only" in shop_page.inner_text("#text-note")
    assert shop_page.locator("#text-query").count() == 0 or not shop_page.is_visible("#text-query")
    upload(shop_page, ui_catalog.parent / "img" / "coffee-1.jpg")
    wait_for_message(shop_page, "similar to your photo")
    caps = captions(shop_page)
    assert caps[0].startswith("coffee view 1 · kitchen · 21.00 · score 1.0")
    assert caps[1].startswith("coffee view 0")
    scores = [float(c.rsplit("score ", 1)[1]) for c in caps]
    assert scores == sorted(scores, reverse=True) and len(caps) == 10
    assert shop_page.outside_requests == []  # fonts, scripts, images: all from the server


def test_click_a_result_and_see_its_neighbours(shop_page, ui_catalog) -> None:
    upload(shop_page, ui_catalog.parent / "img" / "chelsea-0.jpg")
    wait_for_message(shop_page, "similar to your photo")
    assert captions(shop_page)[0].startswith("chelsea view 0")
    shop_page.locator("#results button.thumbnail-item").nth(2).click()
    wait_for_message(shop_page, "More like")
    picked = shop_page.inner_text("#message").split("“")[1].split("”")[0]
    caps = captions(shop_page)
    assert caps and all(not c.startswith(picked + " ·") for c in caps)
    twin = (
        picked.replace("view 0", "view X").replace("view 1", "view 0").replace("view X", "view 1")
    )
    assert caps[0].startswith(twin), (picked, caps)


def test_filter_by_category_shows_only_that_category(shop_page, ui_catalog) -> None:
    shop_page.click("#category input")
    shop_page.get_by_role("option", name="vehicles").click()
    upload(shop_page, ui_catalog.parent / "img" / "coffee-0.jpg")
    wait_for_message(shop_page, "similar to your photo")
    caps = captions(shop_page)
    assert len(caps) == 4  # two rockets and two motorcycles
    assert all(" · vehicles · " in c for c in caps), caps


def test_more_results_pages_further(shop_page, ui_catalog) -> None:
    shop_page.locator("#top-k input[type=number]").fill("4")
    shop_page.locator("#top-k input[type=number]").press("Enter")
    upload(shop_page, ui_catalog.parent / "img" / "rocket-0.jpg")
    wait_for_message(shop_page, "showing 4 result")
    first = captions(shop_page)
    shop_page.click("#more")
    wait_for_message(shop_page, "showing 8 result")
    caps = captions(shop_page)
    assert caps[:4] == first and len(set(caps)) == 8


def test_text_file_upload_shows_a_clear_error(shop_page, tmp_path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("a shopping list, not a photo")
    upload(shop_page, notes)
    toast = shop_page.locator(".toast-body").first
    toast.wait_for()
    assert "Invalid file type" in toast.inner_text() and "image" in toast.inner_text()
    fake = tmp_path / "holiday.jpg"
    fake.write_text("this is text wearing a .jpg name")
    shop_page.reload(wait_until="load")
    upload(shop_page, fake)
    toast = shop_page.locator(".toast-body", has_text="not an image we can read")
    toast.wait_for()
    assert "JPEG, PNG or WebP" in toast.inner_text()
    assert captions(shop_page) == []


def test_oversized_photo_shows_a_clear_error(shop_page, tmp_path) -> None:
    from PIL import Image

    big = tmp_path / "huge.png"
    Image.effect_noise((900, 900), 90).convert("RGB").save(big)  # ~2 MB, limit is 1 MB
    assert big.stat().st_size > 1024 * 1024
    upload(shop_page, big)
    toast = shop_page.locator(".toast-body").first
    toast.wait_for()
    text = toast.inner_text().lower()
    assert "size" in text or "large" in text, text
    assert captions(shop_page) == []


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
            "(document.querySelector('#status')?.innerText || '').includes('Milvus')"
        )
        assert "cannot connect to Milvus" in page.inner_text("#status")
        upload(page, ui_catalog.parent / "img" / "coffee-0.jpg")
        toast = page.locator(".toast-body", has_text="unavailable right now")
        toast.wait_for()
        assert "try again" in toast.inner_text()
        assert captions(page) == []
    except Exception:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
        raise
    finally:
        page.close()
