"""A query photo at the size a search uses, before it travels.

A search never needs more than :data:`QUERY_SIDE` pixels on a photo's longest side: the
shop page's handlers reduce every upload to that first (:func:`query_photo`, the JPEG
decoded at a reduced scale, then shrunk), and the JSON API decodes an upload at the reduced
scale its crops need. A 12 MP phone photo is 3-5 MB; sent as is, it costs the
uplink, the server's multipart parse and, above all, its decode: libjpeg reads the whole
file even at 1/4 scale (~10 ms of a ~20 ms query on the 2-core benchmark CPU). So the
clients shrink first, as the server would: the shop page in the browser (``ui/upload.py``)
and the Python client (:func:`shrink_upload`, used by :class:`search.client.RemoteSearcher`).

What the server must judge is left to it: a file it would refuse (not a JPEG, PNG or WebP,
over the pixel limit, unreadable) goes up untouched, so the limits and their messages are
the server's, as before.
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from ..errors import ImageError
from .decode import DEFAULT_MAX_PIXELS, open_image, sniff_format

QUERY_SIDE = 1024  # a query photo is reduced to this longest side before anything else
# ... after a reduced decode that keeps this shorter side: a 4000 x 3000 JPEG decodes at 1/4
# scale (1000 x 750) instead of 1/2 (2000 x 1500, then resized): 68 vs 97 ms median here
QUERY_MIN_SIDE = 720
SHRINK_ABOVE = 1.25  # only photos whose longest side passes QUERY_SIDE by this factor
UPLOAD_QUALITY = 90  # JPEG quality of a shrunk photo
SHRINK_FORMATS = {"JPEG", "PNG", "WEBP"}  # photos; anything else goes up as it is


def query_photo(
    source: str | Path | bytes,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    side: int = QUERY_SIDE,
    min_side: int = QUERY_MIN_SIDE,
) -> Image.Image:
    """Decode a query photo at reduced size first (JPEG ``draft``: the smallest DCT scale
    whose shorter side still has ``min_side`` pixels), then shrink it to ``side`` on its
    longest side; refuses more than ``max_pixels`` pixels before decoding."""
    img = open_image(source, max_pixels=max_pixels, draft_size=min(side, min_side))
    if max(img.size) > side:
        _reduce(img, side)
    return img


def shrink_upload(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> bytes:
    """``data`` reduced as the server would reduce it, as a JPEG; or ``data`` itself.

    Unchanged: a photo already within :data:`SHRINK_ABOVE` x :data:`QUERY_SIDE`, and
    anything the server should judge (another format, more than ``max_pixels`` pixels,
    bytes that do not decode). The EXIF orientation is applied here, so the JPEG sent
    needs none.
    """
    if sniff_format(data[:32]) not in SHRINK_FORMATS:
        return data
    try:
        with Image.open(io.BytesIO(data)) as probe:  # the header only
            width, height = probe.size
    except (OSError, ValueError, Image.DecompressionBombError):
        return data
    if width * height > max_pixels or max(width, height) <= QUERY_SIDE * SHRINK_ABOVE:
        return data
    try:
        img = query_photo(data, max_pixels)
    except ImageError:
        return data
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=UPLOAD_QUALITY)
    return buf.getvalue()


def shrink_picture(img: Image.Image) -> Image.Image:
    """An already decoded picture reduced to :data:`QUERY_SIDE` when it is bigger than
    :data:`SHRINK_ABOVE` x that (a copy; the caller's picture is left alone)."""
    if max(img.size) <= QUERY_SIDE * SHRINK_ABOVE:
        return img
    small = img.copy()
    _reduce(small, QUERY_SIDE)
    return small


def _reduce(img: Image.Image, side: int) -> None:
    """``img`` shrunk in place to ``side`` on its longest side: the one resampling that the
    server's reduction and the client's share."""
    img.thumbnail((side, side), Image.Resampling.BILINEAR, reducing_gap=2.0)
