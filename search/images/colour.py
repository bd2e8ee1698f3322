"""EXIF orientation and colour conversion: any decoded picture -> upright 8-bit RGB.

Palette, CMYK, 16-bit, grey and bilevel modes convert to RGB; transparency is composited on
white (a product cut-out on a studio background, not on black); 16/32-bit integer and float
pictures are mapped onto 0..255 by their value range.
"""

from __future__ import annotations

import logging

from PIL import Image

log = logging.getLogger(__name__)

_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def orientation(img: Image.Image) -> int:
    """The EXIF orientation tag (1: upright; 1 too when the EXIF block is unreadable)."""
    try:
        return int(img.getexif().get(0x0112, 1) or 1)
    except Exception:  # a broken EXIF block must not lose the picture
        log.debug("ignoring unreadable EXIF orientation")
        return 1


def to_rgb(img: Image.Image) -> Image.Image:
    """Apply EXIF orientation and convert any mode to RGB (transparency onto white)."""
    return oriented_rgb(img, orientation(img))


def oriented_rgb(img: Image.Image, turn: int) -> Image.Image:
    """``img`` in RGB, turned upright for the EXIF orientation ``turn``."""
    img = _convert_rgb(img)
    method = _ORIENTATION.get(turn)
    return img.transpose(method) if method is not None else img


def _convert_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        img = _scale_to_8bit(img)
        mode = img.mode
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img if mode == "RGBA" else img.convert("RGBA")
        out = Image.new("RGB", rgba.size, (255, 255, 255))
        out.paste(rgba, mask=rgba.getchannel("A"))  # alpha-composite onto white
        return out
    return img.convert("RGB")


def _scale_to_8bit(img: Image.Image) -> Image.Image:
    """Map 16/32-bit integer and float images onto 0..255 greyscale by their value range."""
    as_float = img.convert("F")
    lo, hi = as_float.getextrema()
    if hi <= lo:
        return Image.new("L", img.size, 0 if hi <= 0 else 255)
    scale = 255.0 / (hi - lo)
    return as_float.point(lambda v: (v - lo) * scale).convert("L")
