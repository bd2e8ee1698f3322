import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from search.errors import ImageError
from search.images import open_image
from tests.helpers import photo


def _png_bytes(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", **kw)
    return buf.getvalue()


def test_exif_orientation_is_applied() -> None:
    img = Image.new("RGB", (40, 20), "red")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif)
    assert open_image(buf.getvalue()).size == (20, 40)


def test_transparency_is_composited_on_white() -> None:
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    out = open_image(_png_bytes(rgba))
    assert out.mode == "RGB" and out.getpixel((0, 0)) == (255, 255, 255)


def test_palette_with_transparency() -> None:
    pal = Image.new("P", (4, 4), 0)
    pal.putpalette([0, 0, 0, 10, 200, 10] + [0] * 762)
    pal.putpixel((1, 1), 1)
    out = open_image(_png_bytes(pal, transparency=0))
    assert out.getpixel((0, 0)) == (255, 255, 255)
    assert out.getpixel((1, 1)) == (10, 200, 10)


def test_sixteen_bit_grey_is_scaled_to_8_bit() -> None:
    arr = np.linspace(0, 65535, 64, dtype=np.uint16).reshape(8, 8)
    img = Image.fromarray(arr)
    out = open_image(_png_bytes(img))
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == (0, 0, 0) and out.getpixel((7, 7)) == (255, 255, 255)


def test_cmyk_jpeg_becomes_rgb() -> None:
    buf = io.BytesIO()
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(buf, "JPEG")
    r, g, b = open_image(buf.getvalue()).getpixel((8, 8))
    assert r > 200 and g < 60 and b < 60


def test_animated_gif_uses_the_first_frame() -> None:
    frames = [Image.new("RGB", (10, 10), c) for c in ("blue", "yellow")]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    r, g, b = open_image(buf.getvalue()).getpixel((5, 5))
    assert b > 200 and r < 50


def test_draft_decodes_large_jpegs_at_reduced_size_but_not_below_target() -> None:
    buf = io.BytesIO()
    photo("astronaut", 512).resize((1600, 1600)).save(buf, "JPEG")
    out = open_image(buf.getvalue(), draft_size=224)
    assert 224 <= min(out.size) < 1600


def _bomb_png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty"),
        (b"this is plain text, not a jpeg", "not an image"),
        (_bomb_png(50_000, 50_000), "decompression bomb"),
    ],
)
def test_bad_inputs_raise_image_error_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(ImageError, match=reason):
        open_image(data)


def test_truncated_jpeg_is_refused() -> None:
    buf = io.BytesIO()
    photo("coffee").save(buf, "JPEG")
    with pytest.raises(ImageError):
        open_image(buf.getvalue()[: len(buf.getvalue()) // 2])


def test_missing_file_is_an_image_error(tmp_path) -> None:
    with pytest.raises(ImageError, match="cannot read"):
        open_image(tmp_path / "nope.jpg")
