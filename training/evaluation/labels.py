"""Labelled catalogs for evaluation and fine-tuning, and the seeded held-out query split.

A label says which catalog items count as "the same" for retrieval: a manifest column such
as ``category``, or a product / SKU-group id shared by several photos of one product
(``product``). ``folder`` (the default for folder catalogs) uses an item's parent folder.

The split is a hash of (seed, salt, item id), not a shuffle: the same item stays on the
same side whatever the catalog order or size, so ``vsearch eval`` and ``vsearch finetune``
given the same ``--seed`` and ``--holdout`` agree on which queries are held out, even after
items were added.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from indexer.catalog import CatalogItem, load_catalog
from search.errors import CatalogError, ConfigError

log = logging.getLogger(__name__)
AUTO_LABELS = ("product", "category")  # the label task's default column, in order
FOLDER = "folder"


@dataclass
class LabelledCatalog:
    """Catalog items that carry a label, in catalog order."""

    items: list[CatalogItem]
    labels: list[str]
    label_column: str
    skipped: int = 0

    def __len__(self) -> int:
        return len(self.items)

    @property
    def ids(self) -> list[str]:
        return [i.id for i in self.items]

    def subset(self, mask: np.ndarray) -> LabelledCatalog:
        keep = np.nonzero(mask)[0]
        return LabelledCatalog(
            [self.items[i] for i in keep], [self.labels[i] for i in keep], self.label_column
        )


def load_labelled(
    source: str | Path,
    label_column: str | None = None,
    *,
    id_column: str | None = None,
    image_column: str | None = None,
    allowed_roots: Sequence[str] = (),
) -> LabelledCatalog:
    """Read a catalog and keep the items that have a label (``None``: pick one)."""
    catalog = load_catalog(
        source,
        id_column=id_column,
        image_column=image_column,
        numeric_columns=(),
        allowed_roots=allowed_roots,
    )
    if not catalog.items:
        raise CatalogError(f"catalog {source} has no usable images")
    column = label_column or _auto_column(catalog.items)
    labels: list[str] = []
    items: list[CatalogItem] = []
    for item in catalog.items:
        value = _label(item, column)
        if value is None or value == "":
            continue
        items.append(item)
        labels.append(str(value))
    skipped = len(catalog.items) - len(items)
    if not items:
        raise ConfigError(f"no catalog item has a value in the label column {column!r}")
    if skipped:
        log.warning("%d items have no %r label and are left out", skipped, column)
    return LabelledCatalog(items, labels, column, skipped)


def _auto_column(items: Sequence[CatalogItem]) -> str:
    for column in AUTO_LABELS:
        if any(column in i.metadata for i in items):
            return column
    return FOLDER


def _label(item: CatalogItem, column: str) -> object:
    if column in item.metadata:
        return item.metadata[column]
    if column == FOLDER:
        parent = PurePosixPath(item.id).parent.as_posix()
        return parent if parent not in ("", ".") else None
    return None


def holdout_mask(
    ids: Sequence[str], fraction: float, seed: int, salt: str = "queries"
) -> np.ndarray:
    """Booleans: which items are held out (about ``fraction`` of them), stable per id."""
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"held-out fraction must be between 0 and 1, got {fraction}")
    out = np.zeros(len(ids), bool)
    for n, item_id in enumerate(ids):
        digest = hashlib.blake2b(f"{seed}:{salt}:{item_id}".encode(), digest_size=8).digest()
        out[n] = int.from_bytes(digest, "big") / 2**64 < fraction
    return out


def choose_task(items: Sequence[CatalogItem], label_column: str | None) -> str:
    """``label`` or ``instance``: what ``auto`` means for a catalog.

    ``label`` when a label column is named (``id`` excepted: every item is its own product)
    or a ``product`` column groups several photos of one product for at least half of the
    items; otherwise ``instance``. A category column alone never selects ``label``:
    categories are too coarse to say which product a shopper photographed.
    """
    if label_column == "id":
        return "instance"
    if label_column:
        return "label"
    products = Counter(str(i.metadata.get("product", "")) for i in items)
    products.pop("", None)
    grouped = sum(c for c in products.values() if c > 1)
    return "label" if len(products) > 1 and grouped >= len(items) / 2 else "instance"
