"""Which stored image references the server is willing to serve; how a shopper's photo is read."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from search import ItemNotFound, Match
from ui.images import Thumbnails, ref_of


def test_url_images_are_handed_back_as_urls() -> None:
    m = Match("u1", 0.9, "https://shop.example/img/u1.jpg", {})
    assert ref_of(m).url == "https://shop.example/img/u1.jpg" and ref_of(m).path is None
    assert Thumbnails().for_match(m) == "https://shop.example/img/u1.jpg"


def test_local_images_are_served_with_their_type(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    Image.new("RGB", (800, 400), "red").save(path)
    ref = ref_of(Match("a", 1.0, str(path), {}))
    assert ref.path == path and ref.media_type == "image/png"
    thumb = Thumbnails(px=100).for_match(Match("a", 1.0, str(path), {}))
    assert isinstance(thumb, Image.Image) and thumb.size == (100, 50)


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "relative/a.jpg",
        "/etc/passwd",
        "/etc/hostname",
        "/nonexistent/x.jpg",
        "file:///etc/passwd",
    ],
)
def test_anything_else_is_not_served(stored: str, tmp_path: Path) -> None:
    with pytest.raises(ItemNotFound):
        ref_of(Match("x", 1.0, stored, {}))
    assert Thumbnails().for_match(Match("x", 1.0, stored, {})) is None


def test_a_non_image_file_is_not_served_even_with_an_image_name(tmp_path: Path) -> None:
    fake = tmp_path / "fake.jpg"
    fake.write_text("secret text")
    assert ref_of(Match("f", 1.0, str(fake), {})).path == fake  # the route serves bytes as stored
    assert Thumbnails().for_match(Match("f", 1.0, str(fake), {})) is None  # the page does not


def test_tile_src_is_an_inline_jpeg_made_once(tmp_path: Path, monkeypatch) -> None:
    import ui.images

    path = tmp_path / "a.png"
    Image.new("RGB", (800, 400), "red").save(path)
    thumbs = Thumbnails(px=100)
    calls = []
    real = ui.images.data_uri
    monkeypatch.setattr(ui.images, "data_uri", lambda img: calls.append(1) or real(img))
    first = thumbs.src(Match("a", 1.0, str(path), {}))
    assert first.startswith("data:image/jpeg;base64,") and str(path) not in first
    assert thumbs.src(Match("a", 0.5, str(path), {})) == first and len(calls) == 1
    assert (
        thumbs.src(Match("u", 1.0, "https://shop.example/u.jpg", {}))
        == "https://shop.example/u.jpg"
    )
    assert thumbs.src(Match("x", 1.0, "/nonexistent.jpg", {})) is None


def test_a_phone_photo_is_decoded_at_a_quarter_and_kept_under_the_query_side(tmp_path) -> None:
    from search import ImageError
    from search.images.upload import QUERY_MIN_SIDE, QUERY_SIDE, query_photo

    sizes = {(4000, 3000): (1000, 750), (1200, 900): (1024, 768), (6000, 6000): (750, 750)}
    for size, expected in sizes.items():
        path = tmp_path / f"{size[0]}x{size[1]}.jpg"
        Image.new("RGB", size, (90, 140, 200)).save(path, quality=80)
        photo = query_photo(path, 64_000_000)
        assert photo.size == expected and photo.mode == "RGB"
        assert max(photo.size) <= QUERY_SIDE and min(photo.size) >= QUERY_MIN_SIDE
    with pytest.raises(ImageError, match="exceeds the limit"):
        query_photo(tmp_path / "4000x3000.jpg", 11_999_999)


def test_the_browser_shrink_script_carries_the_servers_limits() -> None:
    import json
    import re

    from ui.upload import BROWSER_SIDE, shrink_js

    script = shrink_js(1234567, 7654321)
    cfg = json.loads(re.search(r"const cfg = (\{.*?\});", script).group(1))
    assert cfg["maxPixels"] == 1234567 and cfg["maxBytes"] == 7654321
    assert cfg["side"] == BROWSER_SIDE and cfg["selector"] == "#query"
    assert "__CONFIG__" not in script and script.strip().startswith("() =>")
