"""Safe, tolerant image loading shared by the indexer and the query path.

Handles EXIF orientation, palette / CMYK / 16-bit / grey / bilevel modes, transparency
(composited on white), animated images (first frame), and refuses decompression bombs
before any pixel is decoded. Every failure is an :class:`ImageError` with a short reason.
"""

from __future__ import annotations

import io
import logging
import stat
import warnings
from pathlib import Path

from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from .errors import ImageError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
DEFAULT_MAX_PIXELS = 64_000_000

# Truncated files must fail, not silently decode as grey: keep PIL strict.
ImageFile.LOAD_TRUNCATED_IMAGES = False


def open_image(
    source: bytes | str | Path | Image.Image,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    draft_size: int | None = None,
) -> Image.Image:
    """Decode ``source`` into an 8-bit RGB image, or raise :class:`ImageError`.

    draft_size: when given, JPEGs are decoded at a reduced scale (PIL ``draft``) that still
        leaves both sides at least this many pixels, which is several times faster than a
        full decode followed by a resize.
    """
    if isinstance(source, Image.Image):
        return to_rgb(source)
    if isinstance(source, bytes | bytearray):
        if not source:
            raise ImageError("empty file (0 bytes)")
        fp: io.BytesIO | str = io.BytesIO(source)
    else:
        path = Path(source)
        try:
            st = path.stat()
            if stat.S_ISDIR(st.st_mode):
                raise ImageError("is a directory")
            if not stat.S_ISREG(st.st_mode):  # a FIFO would block the decoder forever
                raise ImageError("not a regular file (FIFO, socket or device)")
            if st.st_size == 0:
                raise ImageError("empty file (0 bytes)")
        except OSError as exc:
            raise ImageError(f"cannot read file: {exc.strerror or exc}") from exc
        fp = str(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(fp)
            _check_size(img, max_pixels)
            if getattr(img, "is_animated", False):
                img.seek(0)
            if draft_size and img.format == "JPEG":
                img.draft("RGB", (draft_size, draft_size))
            img.load()
            return to_rgb(img)
    except ImageError:
        raise
    except UnidentifiedImageError as exc:
        raise ImageError("not an image (unrecognised format)") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"decompression bomb refused: {exc}") from exc
    except OSError as exc:
        msg = str(exc) or exc.__class__.__name__
        if "truncated" in msg.lower():
            raise ImageError(f"truncated image: {msg}") from exc
        raise ImageError(f"cannot decode image: {msg}") from exc
    except MemoryError as exc:
        raise ImageError("image too large to decode") from exc
    except Exception as exc:  # PIL plugins raise SyntaxError, ValueError, struct.error...
        raise ImageError(f"cannot decode image: {exc.__class__.__name__}: {exc}") from exc


def _check_size(img: Image.Image, max_pixels: int) -> None:
    width, height = img.size
    if width <= 0 or height <= 0:
        raise ImageError(f"invalid image size {width}x{height}")
    if width * height > max_pixels:
        raise ImageError(
            f"decompression bomb refused: {width}x{height} px exceeds the limit of "
            f"{max_pixels:,} pixels"
        )


def to_rgb(img: Image.Image) -> Image.Image:
    """Apply EXIF orientation and convert any mode to RGB (transparency onto white)."""
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block must not lose the picture
        log.debug("ignoring unreadable EXIF orientation")
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
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def _scale_to_8bit(img: Image.Image) -> Image.Image:
    """Map 16/32-bit integer and float images onto 0..255 greyscale by their value range."""
    as_float = img.convert("F")
    lo, hi = as_float.getextrema()
    if hi <= lo:
        return Image.new("L", img.size, 0 if hi <= 0 else 255)
    scale = 255.0 / (hi - lo)
    return as_float.point(lambda v: (v - lo) * scale).convert("L")


def is_image_path(path: str | Path) -> bool:
    """True when the file name has one of the catalog image extensions."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS
