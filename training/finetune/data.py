"""Training data: the train / validation split and label-balanced batches.

Training photos come through the imaging module's loader (:mod:`search.images.loader`,
``ImageDataset(..., augment=...)``): augmentation (:mod:`.augment`) runs on the decoded photo,
before the model's own transform.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from indexer.fetch import read_image_bytes
from indexer.hashing import content_hash
from search.errors import ConfigError, ImageError

from ..evaluation.labels import LabelledCatalog, holdout_mask


@dataclass
class Split:
    """Positions into the fine-tuning catalog: training items and validation queries."""

    train: np.ndarray
    val: np.ndarray
    held_out: int  # items kept for ``vsearch eval`` (never seen here)
    holdout_fraction: float = 0.2  # how they were chosen (with ``seed``)
    seed: int = 0


@dataclass
class TrainingSet:
    """What a loop learns from and validates on: the fine-tuning pool (``catalog``), its
    train / validation split, and which items' photos could be read (``ok``)."""

    catalog: LabelledCatalog
    split: Split
    ok: np.ndarray

    @property
    def train(self) -> np.ndarray:
        """The training items that can be read (positions into ``catalog``)."""
        return self.split.train[self.ok[self.split.train]]


def make_split(
    catalog: LabelledCatalog,
    *,
    holdout: float,
    val_fraction: float,
    seed: int,
    max_items: int = 0,
) -> tuple[LabelledCatalog, Split]:
    """Drop eval's held-out queries, then split the rest into train and validation."""
    queries = holdout_mask(catalog.ids, holdout, seed)
    pool = catalog.subset(~queries)
    val = holdout_mask(pool.ids, val_fraction, seed, salt="validation")
    train = np.nonzero(~val)[0]
    if max_items and train.size > max_items:
        rng = np.random.default_rng(seed)
        train = np.sort(rng.choice(train, size=max_items, replace=False))
    keep = np.sort(np.concatenate([train, np.nonzero(val)[0]]))
    pool = pool.subset(np.isin(np.arange(len(pool)), keep))
    is_val = np.isin(keep, np.nonzero(val)[0])
    split = Split(np.nonzero(~is_val)[0], np.nonzero(is_val)[0], int(queries.sum()), holdout, seed)
    if split.train.size < 2 or len({pool.labels[i] for i in split.train}) < 2:
        raise ConfigError("too few training items (need at least two labels) after the split")
    return pool, split


def add_training_items(
    pool: LabelledCatalog, split: Split, extra: LabelledCatalog, exclude: LabelledCatalog
) -> tuple[LabelledCatalog, Split, int]:
    """Append ``extra``'s items to ``pool`` as training items only.

    Items whose id or image content (hash) is also in ``exclude`` (the whole catalog being
    fine-tuned, held-out queries included) are dropped: a held-out or validation photo must
    never train. Returns the new pool, the new split and how many items were dropped.
    """
    ids = set(exclude.ids)
    hashes = {_hash(item.image) for item in exclude.items} - {None}
    keep = [
        n
        for n, item in enumerate(extra.items)
        if item.id not in ids and _hash(item.image) not in hashes
    ]
    start = len(pool)
    merged = LabelledCatalog(
        pool.items + [extra.items[n] for n in keep],
        pool.labels + [extra.labels[n] for n in keep],
        pool.label_column,
    )
    train = np.concatenate([split.train, np.arange(start, len(merged))])
    return (
        merged,
        Split(train, split.val, split.held_out, split.holdout_fraction, split.seed),
        len(extra) - len(keep),
    )


def _hash(ref: str) -> str | None:
    try:
        return content_hash(read_image_bytes(ref))
    except ImageError:
        return None  # unreadable: the feature extraction reports it


def label_ids(labels: Sequence[str]) -> np.ndarray:
    """Labels as integers 0..L-1 (for the loss)."""
    table = {label: n for n, label in enumerate(sorted(set(labels)))}
    return np.array([table[label] for label in labels], np.int64)


def pk_batches(
    labels: np.ndarray, batch_size: int, per_label: int, rng: np.random.Generator
) -> Iterator[np.ndarray]:
    """One epoch of batches, each made of chunks of ``per_label`` same-label items.

    Every item appears once per epoch; metric losses need positives in each batch, which a
    plain shuffle rarely gives when a label (a product) has only a few photos.
    """
    groups: dict[int, list[int]] = defaultdict(list)
    for pos in rng.permutation(len(labels)):
        groups[int(labels[pos])].append(int(pos))
    chunks = [g[i : i + per_label] for g in groups.values() for i in range(0, len(g), per_label)]
    order = rng.permutation(len(chunks))
    batch: list[int] = []
    for c in order:
        batch += chunks[c]
        if len(batch) >= batch_size:
            yield np.array(batch)
            batch = []
    if len(batch) > 1:
        yield np.array(batch)
