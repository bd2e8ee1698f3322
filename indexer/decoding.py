"""The decoder of every job over catalog references (indexing, evaluation, fine-tuning).

A catalog reference is a path or an http(s) URL: :func:`indexer.fetch.read_image_bytes`
reads it (URLs through the downloader's guards), :func:`indexer.hashing.content_hash`
fingerprints the bytes, and :class:`search.images.Decoder` decodes the same bytes once.
"""

from __future__ import annotations

import functools

from search.images import Decoder

from .fetch import read_image_bytes
from .hashing import content_hash


def catalog_decoder(
    max_pixels: int, draft_size: int | None, *, allow_private: bool = False
) -> Decoder:
    """Read, hash and decode catalog references within ``max_pixels``, at ``draft_size``.

    allow_private: URLs may reach loopback/private hosts (``Settings.indexing.allow_private_urls``).
    """
    read = functools.partial(read_image_bytes, allow_private=allow_private)
    return Decoder(read=read, max_pixels=max_pixels, draft_size=draft_size, digest=content_hash)
