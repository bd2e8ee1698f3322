"""A big query photo is reduced before it travels, as the server would reduce it: the Python
client sends ~1 MP instead of 12, the server searches the same picture, and whatever the
server must judge goes up untouched."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
from PIL import Image

from search.client import RemoteSearcher
from search.images.upload import (
    QUERY_MIN_SIDE,
    QUERY_SIDE,
    SHRINK_ABOVE,
    query_photo,
    shrink_upload,
)
from tests.helpers import PHOTOS, photo


def _jpeg(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90, **kw)
    return buf.getvalue()


def _phone(name: str = "chelsea", size: tuple[int, int] = (4032, 3024)) -> Image.Image:
    return photo(name, 512).resize(size, Image.Resampling.BICUBIC)


def test_a_phone_photo_goes_up_as_the_picture_the_server_would_search() -> None:
    raw = _jpeg(_phone())
    sent = shrink_upload(raw)
    img = Image.open(io.BytesIO(sent))
    assert img.format == "JPEG" and img.size == (1008, 756)  # 1/4-scale decode, as the server
    assert max(img.size) <= QUERY_SIDE and min(img.size) >= QUERY_MIN_SIDE
    assert len(sent) < len(raw) / 4
    # what the server builds from either upload is the same picture, up to JPEG rounding
    server_raw = np.asarray(query_photo(raw), np.float32)
    server_sent = np.asarray(query_photo(sent), np.float32)
    assert server_raw.shape == server_sent.shape
    assert float(np.abs(server_raw - server_sent).mean()) < 2.0


def test_the_exif_orientation_is_applied_before_it_is_dropped() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown portrait (rotate 90 degrees clockwise)
    sent = shrink_upload(_jpeg(_phone(), exif=exif.tobytes()))
    img = Image.open(io.BytesIO(sent))
    assert img.size == (756, 1008)  # portrait, as shown
    assert img.getexif().get(0x0112) in (None, 1)  # nothing left for the server to turn


@pytest.mark.parametrize(
    "case",
    ["small enough", "gif", "bmp", "not an image", "truncated", "over the pixel limit"],
)
def test_what_the_server_must_judge_goes_up_untouched(case: str) -> None:
    big = _phone(size=(2000, 1500))
    if case == "small enough":
        data = _jpeg(big.resize((int(QUERY_SIDE * SHRINK_ABOVE), 900)))
    elif case in ("gif", "bmp"):
        buf = io.BytesIO()
        big.save(buf, case.upper())
        data = buf.getvalue()
    elif case == "not an image":
        data = b"%PDF-1.7 not a photo at all" * 100
    elif case == "truncated":
        data = _jpeg(big)[:2000]  # the header says 2000 x 1500; the pixels are missing
    else:
        data = _jpeg(big)
        assert shrink_upload(data, max_pixels=2000 * 1500 - 1) == data
        return
    assert shrink_upload(data) == data


def test_the_shrunk_photo_finds_what_the_whole_photo_finds(embedder) -> None:
    for name in PHOTOS[:4]:
        raw = _jpeg(_phone(name))
        whole, small = embedder.embed_images([raw, shrink_upload(raw)])
        cos = float(np.dot(whole, small) / np.linalg.norm(whole) / np.linalg.norm(small))
        assert cos >= 0.99, (name, cos)


def _recording_client(shrink: bool = True) -> tuple[RemoteSearcher, list[bytes]]:
    sent: list[bytes] = []

    def reply(request: httpx.Request) -> httpx.Response:
        boundary = request.headers["content-type"].split("boundary=")[1].encode()
        for part in request.read().split(b"--" + boundary):
            head, _, data = part.partition(b"\r\n\r\n")
            if b'name="image"' in head:
                sent.append(data[: -len(b"\r\n")])
        return httpx.Response(200, json={"matches": []})

    transport = httpx.MockTransport(reply)
    return RemoteSearcher("http://vsearch.test", transport=transport, shrink=shrink), sent


def test_the_client_sends_a_big_photo_shrunk_and_can_send_it_whole(tmp_path) -> None:
    raw = _jpeg(_phone())
    path = tmp_path / "phone.jpg"
    path.write_bytes(raw)
    client, sent = _recording_client()
    client.similar(path)
    client.similar(raw)
    assert sent[0] == sent[1] == shrink_upload(raw)
    client.similar(_phone())  # a decoded picture goes up as a PNG, reduced too
    png = Image.open(io.BytesIO(sent[2]))
    assert png.format == "PNG" and max(png.size) == QUERY_SIDE

    whole, sent_whole = _recording_client(shrink=False)
    whole.similar(path)
    whole.similar(_phone())
    assert sent_whole[0] == raw
    assert Image.open(io.BytesIO(sent_whole[1])).size == (4032, 3024)
