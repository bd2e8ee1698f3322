"""The one imaging module: every picture that reaches a model of ours goes through here.

Indexing, queries, evaluation and fine-tuning all use it; nothing else decodes or
preprocesses an image.

- :mod:`.decode`: safe decoding of untrusted bytes (format allowlist by magic number, pixel
  and memory limits, JPEG reduced-size decode), :func:`open_image`, :func:`check_image`.
- :mod:`.colour`: EXIF orientation and every mode to 8-bit RGB (:func:`to_rgb`).
- :mod:`.decoder`: :class:`Decoder`, how one job reads (a reader for its references),
  hashes and decodes its images, with its limits and reduced size.
- :mod:`.preprocess`: the model's inference transform in PIL + numpy (:class:`Preprocess`),
  the query path without torch.
- :mod:`.upload`: a query photo at the size a search uses (:func:`~.upload.query_photo`), and
  reduced that way before it travels (:func:`~.upload.shrink_upload`, the Python client).
- :mod:`.precision`: the mixed-precision policy of every forward pass (:func:`autocast`).
- :mod:`.batch` (torch): the model's transform split into a per-image part and a per-batch
  part on the device (:class:`~.batch.BatchPreprocess`), torch resize, device JPEG decode.
- :mod:`.workers`: decode workers without torch (:class:`~.workers.PixelBatches`), the
  indexer's loader when an exported runtime runs the model.
- :mod:`.loader` (torch): the DataLoader factory (:class:`~.loader.ImageDataset`,
  :func:`~.loader.make_loader`, :func:`~.loader.model_input`): decode workers, each image
  read once per job, failures as reasons.

This package imports neither torch nor open_clip: :mod:`.batch` and :mod:`.loader` do, and
are imported by name by the jobs that run a model in PyTorch (``vsearch search`` with an
exported runtime never loads them).
"""

from __future__ import annotations

from .colour import to_rgb
from .decode import (
    ALLOWED_FORMATS,
    BYTES_PER_PIXEL,
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PIXELS,
    HEADER_BYTES,
    IMAGE_EXTENSIONS,
    check_image,
    is_image_path,
    open_image,
    sniff_format,
)
from .decoder import Decoder
from .precision import autocast, autocast_dtype, precision_name, scales_gradients
from .preprocess import Preprocess

__all__ = [
    "ALLOWED_FORMATS",
    "BYTES_PER_PIXEL",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PIXELS",
    "HEADER_BYTES",
    "IMAGE_EXTENSIONS",
    "Decoder",
    "Preprocess",
    "autocast",
    "autocast_dtype",
    "check_image",
    "is_image_path",
    "open_image",
    "precision_name",
    "scales_gradients",
    "sniff_format",
    "to_rgb",
]
