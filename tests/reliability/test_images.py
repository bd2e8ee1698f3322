"""Hostile and odd image files through ``open_image`` (the indexer's and the query's decoder)."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from search.errors import ImageError
from search.images import open_image
from tests.helpers import photo

from . import hostile

FILES = hostile.catalog_files()


@pytest.mark.parametrize("name", sorted(FILES))
def test_every_file_decodes_to_rgb_or_raises_image_error(name: str, tmp_path: Path) -> None:
    data, must_decode = FILES[name]
    path = tmp_path / name
    path.write_bytes(data)
    for source in (data, path):
        if must_decode:
            img = open_image(source)
            assert img.mode == "RGB" and img.width >= 1 and img.height >= 1
        else:
            with pytest.raises(ImageError) as info:
                open_image(source)
            assert str(info.value)  # a reason, shown in the run's report


@pytest.mark.parametrize("name", ["bomb-50000.png", "bomb.jpg", "bomb.gif", "bomb-9000.png"])
def test_bombs_are_refused_from_the_header_fast(name: str) -> None:
    t0 = time.perf_counter()
    with pytest.raises(ImageError, match="decompression bomb"):
        open_image(FILES[name][0])
    assert time.perf_counter() - t0 < 5  # no pixel was decoded (a decode would take minutes/OOM)


def test_cmyk_becomes_the_right_rgb_colour() -> None:
    r, g, b = np.asarray(open_image(FILES["cmyk.jpg"][0])).reshape(-1, 3).mean(axis=0)
    assert r > 200 and g < 60 and b < 60


def test_16_bit_png_keeps_its_ramp() -> None:
    arr = np.asarray(open_image(FILES["deep16.png"][0]))[0, :, 0].astype(int)
    assert arr[0] < 5 and arr[-1] > 250 and np.all(np.diff(arr) >= 0)


def test_palette_transparency_is_composited_on_white() -> None:
    arr = np.asarray(open_image(FILES["palette-alpha.png"][0]))
    assert tuple(arr[8, 4]) == (0, 0, 255)  # opaque blue half
    assert tuple(arr[8, 28]) == (255, 255, 255)  # transparent half -> white, not black


@pytest.mark.parametrize("name", ["animated.gif", "animated.webp"])
def test_animated_images_use_the_first_frame(name: str) -> None:
    r, g, _ = np.asarray(open_image(FILES[name][0])).reshape(-1, 3).mean(axis=0)
    assert r > 200 and g < 60


def test_exif_orientation_is_applied(embedder) -> None:
    upright = photo("astronaut", 160)
    rotated = FILES["exif-rotated.jpg"][0]
    img = open_image(rotated)
    assert img.size == upright.size
    diff = np.abs(np.asarray(img, np.float32) - np.asarray(upright, np.float32)).mean()
    assert diff < 8, diff
    # and the embedding matches the upright photo better than the raw, sideways pixels do
    sideways = Image.fromarray(np.asarray(Image.open(io.BytesIO(rotated)).convert("RGB")))
    vec_up, vec_rot, vec_side = embedder.embed_images([upright, rotated, sideways])
    assert float(vec_up @ vec_rot) > 0.98
    assert float(vec_up @ vec_rot) > float(vec_up @ vec_side) + 0.02


def test_special_paths_raise_image_error(tmp_path: Path) -> None:
    import os

    (tmp_path / "dir.jpg").mkdir()
    os.mkfifo(tmp_path / "fifo.jpg")
    os.symlink(tmp_path / "loop-b.jpg", tmp_path / "loop-a.jpg")
    os.symlink(tmp_path / "loop-a.jpg", tmp_path / "loop-b.jpg")
    expected = {
        "dir.jpg": "is a directory",
        "fifo.jpg": "not a regular file",
        "loop-a.jpg": "symbolic links",
        "missing.jpg": "cannot read file",
    }
    for name, reason in expected.items():
        with pytest.raises(ImageError, match=reason):
            open_image(tmp_path / name)


# -- fuzzing: whatever the bytes, open_image returns RGB or raises ImageError ---------------
SEEDS = [
    hostile.encode(photo("coffee", 48), "JPEG"),
    hostile.encode(photo("coffee", 48), "PNG"),
    hostile.encode(photo("coffee", 48).convert("P"), "GIF"),
    hostile.encode(photo("coffee", 48), "WEBP"),
    hostile.encode(photo("coffee", 24), "BMP"),
    hostile.encode(photo("coffee", 24), "TIFF"),
    hostile.palette_transparent_png(),
    hostile.png16(),
]


def _check(data: bytes) -> None:
    try:
        img = open_image(data, max_pixels=4_000_000)
    except ImageError:
        return
    assert img.mode == "RGB" and img.width * img.height <= 4_000_000


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.sampled_from(SEEDS),
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=12),
    cut=st.integers(0, 10_000),
)
def test_fuzz_mutated_images_only_raise_image_error(seed: bytes, edits, cut: int) -> None:
    data = bytearray(seed)
    for pos, value in edits:
        data[pos % len(data)] = value
    if cut:
        data = data[: max(1, len(data) - cut % len(data))]
    _check(bytes(data))


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=2048))
def test_fuzz_random_bytes_only_raise_image_error(data: bytes) -> None:
    _check(data)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.sampled_from(SEEDS),
    header=st.binary(min_size=1, max_size=40),
)
def test_fuzz_rewritten_headers_only_raise_image_error(seed: bytes, header: bytes) -> None:
    _check(header + seed[len(header) :])
