"""Safe decoding of untrusted image bytes: format allowlist, limits, reduced-size decode.

Untrusted bytes only ever reach Pillow's raster decoders: the format is read from the first
bytes (magic numbers) BEFORE Pillow sees the file, must be one of :data:`ALLOWED_FORMATS`,
and Pillow is then told to try that one format only (``Image.open(formats=[...])``), so a
PostScript file named ``x.jpg`` never reaches Ghostscript, whatever the file name says.

Limits, checked from the header before any pixel is decoded:
- ``max_pixels``: the dimensions the header claims (decompression bombs);
- ``max_bytes``: the memory the decoded pixels would take. JPEGs are decoded at a reduced
  scale (libjpeg's DCT scaling, Pillow's ``draft``) when the caller needs fewer pixels
  (``draft_size``) or the full size would not fit the budget; other formats over the budget
  are refused. Large decoded images are shrunk (``reduce``) before colour conversion.

EXIF orientation and the conversion of every mode to 8-bit RGB are :mod:`.colour`'s;
animated images give their first frame. Every failure is an
:class:`ImageError` whose text is a short reason meant for the user: no command lines, paths
or decoder internals (those go to the debug log).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from PIL import Image, ImageFile, UnidentifiedImageError

from ..errors import ImageError
from .colour import orientation, oriented_rgb, to_rgb

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
DEFAULT_MAX_PIXELS = 64_000_000
DEFAULT_MAX_BYTES = 128 * 1024 * 1024  # decoded pixels of one image
BYTES_PER_PIXEL = 4  # Pillow keeps RGB as 4 bytes a pixel; RGBA/CMYK/I/F are 4 too
HEADER_BYTES = 16

# (magic, offset, Pillow format) of the allowed raster formats; read before Pillow runs.
_MAGIC: tuple[tuple[bytes, int, str], ...] = (
    (b"\xff\xd8\xff", 0, "JPEG"),
    (b"\x89PNG\r\n\x1a\n", 0, "PNG"),
    (b"GIF87a", 0, "GIF"),
    (b"GIF89a", 0, "GIF"),
    (b"BM", 0, "BMP"),
    (b"II*\x00", 0, "TIFF"),
    (b"MM\x00*", 0, "TIFF"),
    (b"II+\x00", 0, "TIFF"),  # BigTIFF
    (b"MM\x00+", 0, "TIFF"),
)
# Formats Pillow (or a plugin) could open but that are refused: named in the message.
_REFUSED: tuple[tuple[bytes, str], ...] = (
    (b"%!PS", "PostScript/EPS"),
    (b"\xc5\xd0\xd3\xc6", "PostScript/EPS"),
    (b"%PDF", "PDF"),
    (b"8BPS", "PSD"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
)
# what Image.open may report for an allowed format (a JPEG with several pictures is MPO)
_OPENED_AS = {"JPEG": {"JPEG", "MPO"}}

# Truncated files must fail, not silently decode as grey: keep PIL strict.
ImageFile.LOAD_TRUNCATED_IMAGES = False


def sniff_format(head: bytes) -> str | None:
    """The allowed format the first bytes announce (Pillow's name), or None."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    for magic, offset, name in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return name
    return None


def _refuse_format(head: bytes) -> ImageError:
    for magic, name in _REFUSED:
        if head.startswith(magic):
            return ImageError(
                f"unsupported image format: {name} (supported: JPEG, PNG, WebP, GIF, BMP, TIFF)"
            )
    return ImageError("not an image (unrecognised format)")


def open_image(
    source: bytes | str | Path | Image.Image,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    draft_size: int | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Image.Image:
    """Decode ``source`` into an 8-bit RGB image, or raise :class:`ImageError`.

    draft_size: when given, the result may be smaller than the file, but both sides stay at
        least this many pixels (JPEGs decode at a reduced scale, several times faster).
    max_pixels / max_bytes: the limits above; a PIL image (already decoded by the caller) is
        checked against them too.
    """
    if isinstance(source, Image.Image):
        _check_size(source.size, max_pixels)
        _check_budget(source.size, max_bytes)
        return to_rgb(source)
    with _open_source(source) as (fp, head):
        fmt = sniff_format(head)
        if fmt is None:
            raise _refuse_format(head)
        return _decode(fp, fmt, max_pixels, draft_size, max_bytes)


def _decode(
    fp: IO[bytes], fmt: str, max_pixels: int, draft_size: int | None, max_bytes: int
) -> Image.Image:
    # No warnings.catch_warnings() here: it swaps process-wide state and is not thread-safe
    # (downloads check bodies in threads). Pillow's own bomb warning above its 89 Mpx is
    # only a warning; our limit (max_pixels, checked next) is what refuses.
    try:
        img = Image.open(fp, formats=[fmt])
        if img.format not in _OPENED_AS.get(fmt, {fmt}):  # never another decoder
            raise ImageError("not an image (unrecognised format)")
        _check_size(img.size, max_pixels)
        if getattr(img, "is_animated", False):
            img.seek(0)
        _reduce_decode(img, fmt, draft_size, max_bytes)  # before anything loads pixels
        img.load()
        turn = orientation(img)  # after load: a PNG's getexif() would decode
        img = _shrink(img, draft_size)
        return oriented_rgb(img, turn)
    except ImageError:
        raise
    except UnidentifiedImageError as exc:
        raise ImageError(f"not a valid {fmt} image") from exc
    except Image.DecompressionBombError as exc:  # over twice Pillow's limit
        log.debug("Pillow refused a bomb: %s", exc)
        raise ImageError("decompression bomb refused: the image is too large") from exc
    except MemoryError as exc:
        raise ImageError("image too large to decode") from exc
    except Exception as exc:  # PIL plugins raise OSError, SyntaxError, ValueError, struct.error
        log.debug("cannot decode a %s image: %s: %s", fmt, exc.__class__.__name__, exc)
        if "truncated" in str(exc).lower():
            raise ImageError(f"truncated image: the {fmt} data ends early") from exc
        raise ImageError(f"cannot decode image: broken {fmt} data") from exc


def check_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> str:
    """Decode ``data`` as cheaply as possible (JPEG at 1/8 scale) to prove it is whole.

    Returns the format name; raises :class:`ImageError` like :func:`open_image` (a body cut
    short fails here, so it is never cached as if it were the image).
    """
    open_image(data, max_pixels=max_pixels, draft_size=1)
    return sniff_format(data[:HEADER_BYTES]) or ""


@contextlib.contextmanager
def _open_source(source: bytes | bytearray | str | Path) -> Iterator[tuple[IO[bytes], bytes]]:
    """A file object for Pillow and its first bytes, after the file checks.

    A path is opened once, non-blocking (a FIFO named like an image must not hang the
    open), checked by fstat on that descriptor, and handed to Pillow as it is: nothing can
    swap the file between the check and the decode.
    """
    if isinstance(source, bytes | bytearray):
        if not source:
            raise ImageError("empty file (0 bytes)")
        yield io.BytesIO(source), bytes(source[:HEADER_BYTES])
        return
    try:
        fd = os.open(Path(source), os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except IsADirectoryError:
        raise ImageError("is a directory") from None
    except OSError as exc:
        raise ImageError(f"cannot read file: {exc.strerror or 'I/O error'}") from None
    except ValueError:  # an embedded NUL byte in the path
        raise ImageError("cannot read file: invalid path") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_size == 0:
        os.close(fd)
        if stat.S_ISDIR(st.st_mode):
            raise ImageError("is a directory")
        if not stat.S_ISREG(st.st_mode):
            raise ImageError("not a regular file (FIFO, socket or device)")
        raise ImageError("empty file (0 bytes)")
    with os.fdopen(fd, "rb") as fh:
        try:
            head = fh.read(HEADER_BYTES)
            fh.seek(0)
        except OSError as exc:
            raise ImageError(f"cannot read file: {exc.strerror or 'I/O error'}") from None
        yield fh, head


def _check_size(size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise ImageError(f"invalid image size {width}x{height}")
    if width * height > max_pixels:
        raise ImageError(
            f"decompression bomb refused: {width}x{height} px exceeds the limit of "
            f"{max_pixels:,} pixels"
        )


def _check_budget(size: tuple[int, int], max_bytes: int) -> None:
    need = size[0] * size[1] * BYTES_PER_PIXEL
    if need > max_bytes:
        raise ImageError(
            f"image too large to decode: {size[0]}x{size[1]} px needs about "
            f"{need / 2**20:,.0f} MiB of memory (limit {max_bytes / 2**20:,.0f} MiB)"
        )


def _reduce_decode(img: Image.Image, fmt: str, draft_size: int | None, max_bytes: int) -> None:
    """Pick the JPEG DCT scale (1, 1/2, 1/4 or 1/8) for the request and the memory budget.

    Other formats have no reduced decode: their full size must fit the budget.
    """
    width, height = img.size
    if fmt == "JPEG":
        wanted = 1
        if draft_size:  # the largest scale that still covers draft_size on both sides
            wanted = max(s for s in (1, 2, 4, 8) if s == 1 or min(width, height) // s >= draft_size)
        for scale in (s for s in (1, 2, 4, 8) if s >= wanted):
            if -(-width // scale) * -(-height // scale) * BYTES_PER_PIXEL <= max_bytes:
                if scale > 1:
                    img.draft("RGB", (max(1, width // scale), max(1, height // scale)))
                break
    _check_budget(img.size, max_bytes)


def _shrink(img: Image.Image, draft_size: int | None) -> Image.Image:
    """Box-reduce a decoded image that is at least twice the requested size (less memory
    and work for the colour conversion; the model resizes to its input anyway)."""
    if not draft_size:
        return img
    factor = min(img.size) // draft_size
    if factor < 2 or img.mode not in ("RGB", "RGBA", "L", "LA", "I", "F"):
        return img
    return img.reduce(factor)


def is_image_path(path: str | Path) -> bool:
    """True when the file name has one of the catalog image extensions."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS
