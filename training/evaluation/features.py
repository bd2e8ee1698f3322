"""Embedding catalog items for evaluation and head training, cached on disk.

Vectors are cached per feature extractor (its ``key``: the model's identity, plus what is
extracted) and per image content hash, so an evaluation re-run, or a head trained on the
features an evaluation already computed, embeds nothing again. Reading, hashing
and decoding run in the DataLoader workers of :mod:`search.images.loader` with the catalog's
decoder (the same stage as indexing, each image read once); a bad image is skipped with its
reason, never fatal. Forward passes follow :mod:`search.images.precision`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from indexer.catalog import CatalogItem
from indexer.decoding import catalog_decoder
from indexer.hashing import file_signature
from indexer.tuning import choose
from search.config import Settings
from search.images import autocast

if TYPE_CHECKING:
    import torch

    from search.embedder import Embedder

log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Feed:
    """How pictures reach a model: its transform, its input size, its device and precision."""

    preprocess: Callable[[Any], Any]
    image_size: int
    device: str
    precision: str = "auto"

    @classmethod
    def of(cls, embedder: Embedder) -> Feed:
        """The embedder's own: its model's transform, device and precision setting."""
        return cls(
            embedder.preprocess,
            embedder.info.image_size,
            embedder.device,
            embedder.precision_setting,
        )

    def autocast(self) -> Any:
        """The precision policy's context for this model's forward passes."""
        return autocast(self.device, self.precision)


class FeatureExtractor(Protocol):
    """What :func:`extract` needs: how pictures reach the model and a batch -> vectors call."""

    key: str
    feed: Feed

    def __call__(self, batch: torch.Tensor) -> np.ndarray: ...

    def finish(self, raw: np.ndarray) -> np.ndarray: ...


class EmbedderFeatures:
    """The L2-normalised embeddings of an :class:`Embedder` (what the index stores)."""

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder
        self.key = f"embed|{embedder.info.key}"
        self.feed = Feed.of(embedder)

    def __call__(self, batch: torch.Tensor) -> np.ndarray:
        return self.embedder.embed_tensors(batch)

    def finish(self, raw: np.ndarray) -> np.ndarray:
        return raw


class TrunkFeatures:
    """Pooled features of a timm vision tower's trunk, cached by the trunk's weights.

    A fine-tuned head on an unchanged trunk (the ``head`` strategy) then reuses the
    features its base computed: :meth:`finish` applies the model's own head and the L2
    normalisation, giving exactly what :meth:`Embedder.embed_tensors` returns.
    """

    def __init__(self, visual: Any, feed: Feed, tag: str) -> None:
        self.trunk, self.head = visual.trunk, visual.head
        self.feed = feed
        self.key = f"trunk|{weights_digest(self.trunk)}|{feed.image_size}|{tag}"

    @classmethod
    def of(cls, embedder: Embedder) -> TrunkFeatures:
        tag = json.dumps(embedder.info.preprocess, sort_keys=True, default=str)
        return cls(embedder.torch_model.visual, Feed.of(embedder), tag)

    def __call__(self, batch: torch.Tensor) -> np.ndarray:
        import torch

        with torch.inference_mode(), self.feed.autocast():
            feats = self.trunk(batch.to(self.feed.device, non_blocking=True))
        return feats.float().cpu().numpy()

    def finish(self, raw: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out = self.head(torch.from_numpy(raw).to(self.feed.device)).float()
            out = torch.nn.functional.normalize(out, dim=-1)
        return out.cpu().numpy().astype(np.float32, copy=False)


def extractor_for(embedder: Embedder) -> EmbedderFeatures | TrunkFeatures:
    """Trunk features for timm towers (shared by a base and its head-tuned models)."""
    from open_clip.timm_model import TimmModel

    visual = embedder.torch_model.visual
    if isinstance(visual, TimmModel):
        return TrunkFeatures.of(embedder)
    return EmbedderFeatures(embedder)


def weights_digest(module: Any) -> str:
    """sha256 (16 hex digits) of a module's parameters and buffers, in name order."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


@dataclass
class Features:
    """Vectors of the items that could be read (``ok``), and why the others could not."""

    vectors: np.ndarray
    ok: np.ndarray
    failed: list[tuple[str, str]] = field(default_factory=list)
    computed: int = 0


def extract(
    items: Sequence[CatalogItem],
    extractor: FeatureExtractor,
    settings: Settings,
    *,
    progress: Progress | None = None,
    use_cache: bool = True,
) -> Features:
    """Vectors for ``items`` (rows of failed items are zero and ``ok`` is False).

    Every image is read at most once: a local file whose size and modification time the
    cache has seen is known by its content hash without reading it; the others are read,
    hashed and decoded in one pass by the indexer's decode workers.
    """
    cache = _Cache(Path(settings.model.cache_dir), extractor.key) if use_cache else None
    known, seen = cache.load() if cache else ({}, {})
    signatures = ["" if i.is_url else f"{i.image}|{file_signature(i.image)}" for i in items]
    hashes: list[str | None] = [seen.get(sig) if sig else None for sig in signatures]
    todo = [n for n, h in enumerate(hashes) if h is None or h not in known]
    failed: list[tuple[str, str]] = []
    fresh: dict[int, tuple[str, np.ndarray]] = {}
    if todo:
        log.info(
            "embedding %d of %d images (%d cached)", len(todo), len(items), len(items) - len(todo)
        )
        fresh, failed = _run(items, todo, extractor, settings, progress)
        for n, (chash, vec) in fresh.items():
            known[chash] = vec
            hashes[n] = chash
            if signatures[n]:
                seen[signatures[n]] = chash
        if cache and fresh:
            cache.save(known, seen)
    elif progress:
        progress(len(items), len(items))
    dim = next(iter(known.values())).shape[0] if known else 0
    vectors = np.zeros((len(items), dim), np.float32)
    ok = np.zeros(len(items), bool)
    for n, h in enumerate(hashes):
        if h is not None and h in known:
            vectors[n] = known[h]
            ok[n] = True
    return Features(vectors, ok, failed, computed=len(fresh))


def _run(
    items: Sequence[CatalogItem],
    todo: list[int],
    extractor: FeatureExtractor,
    settings: Settings,
    progress: Progress | None,
) -> tuple[dict[int, tuple[str, np.ndarray]], list[tuple[str, str]]]:
    """Read, hash, decode and embed ``items[todo]`` in the imaging module's decode workers."""
    import torch

    from search.images.batch import BatchPreprocess
    from search.images.loader import ImageDataset, make_loader, model_input

    feed = extractor.feed
    tuning = choose(settings, feed.device)
    torch.set_num_threads(tuning.threads)
    prep = BatchPreprocess(feed.preprocess)
    decoder = catalog_decoder(
        settings.indexing.max_image_pixels,
        feed.image_size,
        allow_private=settings.indexing.allow_private_urls,
    )
    dataset = ImageDataset([items[n].image for n in todo], prep, decoder)
    loader = make_loader(
        dataset,
        tuning.batch_size,
        workers=min(tuning.workers, len(todo)),
        pin_memory=feed.device.startswith("cuda"),
    )
    out: dict[int, tuple[str, np.ndarray]] = {}
    failed: list[tuple[str, str]] = []
    done = 0
    for batch in loader:
        index, hashes, pixels = model_input(batch, prep, feed.device, decoder)
        failed += [(items[todo[p]].id, reason) for p, reason in batch.failed]
        if pixels is not None:
            for p, chash, vec in zip(index, hashes, extractor(pixels), strict=True):
                out[todo[p]] = (chash, vec)
        done += len(index) + len(batch.failed)
        if progress:
            progress(done, len(todo))
    return out, failed


class _Cache:
    """``<cache_dir>/features/<digest of key>.npz``: content hashes and their vectors, plus
    the content hash of each local file by its path, size and modification time."""

    def __init__(self, cache_dir: Path, key: str) -> None:
        digest = hashlib.sha256(key.encode()).hexdigest()[:20]
        self.path = cache_dir / "features" / f"{digest}.npz"

    def load(self) -> tuple[dict[str, np.ndarray], dict[str, str]]:
        try:
            with np.load(self.path, allow_pickle=False) as data:
                known = dict(zip(data["hashes"].tolist(), data["vectors"], strict=True))
                files = data["files"].tolist() if "files" in data else []
                file_hashes = data["file_hashes"].tolist() if "files" in data else []
                return known, dict(zip(files, file_hashes, strict=True))
        except (OSError, KeyError, ValueError):
            return {}, {}

    def save(self, known: dict[str, np.ndarray], seen: dict[str, str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp.npz")
        np.savez(
            tmp,
            hashes=np.array(list(known)),
            vectors=np.stack(list(known.values())),
            files=np.array(list(seen), dtype=str),
            file_hashes=np.array(list(seen.values()), dtype=str),
        )
        tmp.replace(self.path)
