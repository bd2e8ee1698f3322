"""Hostile and odd image files, made on the spot (no downloads)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

from tests.helpers import photo


def encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def png_claiming(width: int, height: int) -> bytes:
    """A tiny, valid-looking PNG whose header claims ``width`` x ``height`` RGB pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    )


def jpeg_claiming(width: int, height: int) -> bytes:
    """A real small JPEG whose SOF header is rewritten to claim ``width`` x ``height``."""
    data = bytearray(encode(photo("coffee", 64), "JPEG"))
    i = 2
    while i < len(data):
        marker, length = data[i + 1], struct.unpack(">H", data[i + 2 : i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            data[i + 5 : i + 9] = struct.pack(">HH", height, width)
            return bytes(data)
        i += 2 + length
    raise AssertionError("no SOF marker")


def gif_claiming(width: int, height: int) -> bytes:
    data = bytearray(encode(Image.new("P", (4, 4)), "GIF"))
    data[6:10] = struct.pack("<HH", width, height)
    return bytes(data)


def cmyk_jpeg() -> bytes:
    """Pure red in CMYK (0 cyan, full magenta and yellow)."""
    return encode(Image.new("CMYK", (32, 32), (0, 255, 255, 0)), "JPEG", quality=95)


def png16() -> bytes:
    """A 16-bit greyscale ramp (mode I;16) from 0 to 65535."""
    ramp = np.tile(np.linspace(0, 65535, 64, dtype=np.uint16), (16, 1))
    return encode(Image.fromarray(ramp, "I;16"), "PNG")


def palette_transparent_png() -> bytes:
    """Palette image: left half colour 1 (blue), right half colour 0 marked transparent."""
    img = Image.new("P", (32, 16), 0)
    img.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    img.paste(1, (0, 0, 16, 16))
    return encode(img, "PNG", transparency=0)


def animated(fmt: str) -> bytes:
    """Two frames: red then green (the first frame is what gets indexed)."""
    frames = [Image.new("RGB", (24, 24), c) for c in ((255, 0, 0), (0, 255, 0))]
    kw = {"lossless": True} if fmt == "WEBP" else {}
    return encode(
        frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0, **kw
    )


def exif_rotated_jpeg(upright: Image.Image) -> bytes:
    """``upright`` stored rotated on its side with EXIF orientation 6 (display: rotate 90 CW)."""
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # 90 CCW; orientation 6 undoes it
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(stored, "JPEG", quality=95, exif=exif.tobytes())


def good_jpeg(name: str = "chelsea") -> bytes:
    return encode(photo(name, 160), "JPEG", quality=90)


# name -> (bytes, True when it must decode, False when it must be refused with ImageError)
def catalog_files() -> dict[str, tuple[bytes, bool]]:
    ok = good_jpeg()
    return {
        "good.jpg": (ok, True),
        "corrupt.jpg": (bytes(range(256)) * 8, False),
        "truncated.jpg": (ok[: len(ok) // 2], False),
        "empty.png": (b"", False),
        "text.png": (b"this is not an image, just text\n" * 10, False),
        "bomb-50000.png": (png_claiming(50_000, 50_000), False),
        "bomb-9000.png": (png_claiming(9_000, 9_000), False),  # over our 64 Mpx, under PIL's
        "bomb.jpg": (jpeg_claiming(60_000, 60_000), False),
        "bomb.gif": (gif_claiming(65_535, 65_535), False),
        "one-pixel.png": (encode(Image.new("RGB", (1, 1), (200, 10, 10)), "PNG"), True),
        "cmyk.jpg": (cmyk_jpeg(), True),
        "deep16.png": (png16(), True),
        "palette-alpha.png": (palette_transparent_png(), True),
        "animated.gif": (animated("GIF"), True),
        "animated.webp": (animated("WEBP"), True),
        "exif-rotated.jpg": (exif_rotated_jpeg(photo("astronaut", 160)), True),
        "grey-alpha.png": (encode(Image.new("LA", (8, 8), (0, 0)), "PNG"), True),
        "bilevel.bmp": (encode(Image.new("1", (9, 9), 1), "BMP"), True),
    }
