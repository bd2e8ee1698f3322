"""How one job reads and decodes its images: its reader, its limits, its reduced size.

A :class:`Decoder` is built once per job (an indexing run, an evaluation, a fine-tuning
run) and handed to its decode workers. The reader turns a reference (a path, a URL) into
bytes; the indexer's reader (:func:`indexer.fetch.read_image_bytes`) also downloads URLs,
which this package may not import, hence the parameter. The bytes are read once: hashed
(``digest``) and decoded from the same buffer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ..errors import ImageError
from .decode import DEFAULT_MAX_PIXELS, open_image

Reader = Callable[[str], bytes]


def read_file(ref: str) -> bytes:
    """The plain reader: a local file's bytes (limits and refusals are :func:`open_image`'s)."""
    return Path(ref).read_bytes()


def failure_reason(exc: Exception) -> str:
    """What a job records for an image it could not use: an :class:`ImageError` says why;
    anything else is unexpected (one bad file never stops a job or kills a worker)."""
    if isinstance(exc, ImageError):
        return str(exc)
    return f"unexpected error: {exc.__class__.__name__}: {exc}"


@dataclass(frozen=True)
class Decoder:
    """Read, hash and safely decode one image reference.

    draft_size: decode at a reduced size that still covers this many pixels on both sides
        (the model's input size), or None for the full size.
    digest: bytes -> content hash ("" when None).
    """

    read: Reader = read_file
    max_pixels: int = DEFAULT_MAX_PIXELS
    draft_size: int | None = None
    digest: Callable[[bytes], str] | None = None

    def decode(self, data: bytes) -> Image.Image:
        """Bytes already read -> an 8-bit RGB picture, or :class:`ImageError`."""
        return open_image(data, max_pixels=self.max_pixels, draft_size=self.draft_size)

    def load(self, ref: str) -> tuple[bytes, str]:
        """The bytes of ``ref`` and their content hash (read once)."""
        data = self.read(ref)
        return data, self.digest(data) if self.digest is not None else ""

    def __call__(self, ref: str) -> Image.Image:
        """Read and decode ``ref``."""
        return self.decode(self.read(ref))
