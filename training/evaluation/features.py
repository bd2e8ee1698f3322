"""Embedding catalog items for evaluation and head training, cached on disk.

Vectors are cached per feature extractor (its ``key``: the model's identity, plus what is
extracted) and per image content hash, so an evaluation re-run, or a head trained on the
features an evaluation already computed, embeds nothing again. Decoding runs in the
indexer's DataLoader workers; a bad image is skipped with its reason, never fatal.
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
from indexer.fetch import read_image_bytes
from indexer.hashing import content_hash
from indexer.tuning import choose
from search.config import Settings
from search.errors import ImageError
from search.images import open_image

if TYPE_CHECKING:
    import torch

    from search.embedder import Embedder

log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]


class FeatureExtractor(Protocol):
    """What :func:`extract` needs: preprocessing, a device and a batch -> vectors call."""

    key: str
    device: str
    image_size: int
    preprocess: Callable[[Any], torch.Tensor]

    def __call__(self, batch: torch.Tensor) -> np.ndarray: ...

    def finish(self, raw: np.ndarray) -> np.ndarray: ...


class EmbedderFeatures:
    """The L2-normalised embeddings of an :class:`Embedder` (what the index stores)."""

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder
        self.key = f"embed|{embedder.info.key}"
        self.device = embedder.device
        self.image_size = embedder.info.image_size
        self.preprocess = embedder.preprocess

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

    def __init__(
        self, visual: Any, device: str, image_size: int, preprocess: Any, tag: str
    ) -> None:
        self.trunk, self.head = visual.trunk, visual.head
        self.device = device
        self.image_size = image_size
        self.preprocess = preprocess
        self.key = f"trunk|{weights_digest(self.trunk)}|{image_size}|{tag}"

    @classmethod
    def of(cls, embedder: Embedder) -> TrunkFeatures:
        info = embedder.info
        tag = json.dumps(info.preprocess, sort_keys=True, default=str)
        return cls(
            embedder.torch_model.visual, embedder.device, info.image_size, embedder.preprocess, tag
        )

    def __call__(self, batch: torch.Tensor) -> np.ndarray:
        import torch

        with torch.inference_mode(), autocast(self.device):
            feats = self.trunk(batch.to(self.device, non_blocking=True))
        return feats.float().cpu().numpy()

    def finish(self, raw: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out = self.head(torch.from_numpy(raw).to(self.device)).float()
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


def autocast(device: str, dtype: Any = None) -> Any:
    """Mixed precision on CUDA (bf16 where supported, else fp16); a no-op on the CPU."""
    import contextlib

    import torch

    if not device.startswith("cuda"):
        return contextlib.nullcontext()
    if dtype is None:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


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
    """Vectors for ``items`` (rows of failed items are zero and ``ok`` is False)."""
    hashes: list[str | None] = []
    failed: list[tuple[str, str]] = []
    for item in items:
        try:
            hashes.append(content_hash(read_image_bytes(item.image)))
        except ImageError as exc:
            hashes.append(None)
            failed.append((item.id, str(exc)))
    cache = _Cache(Path(settings.cache_dir), extractor.key) if use_cache else None
    known = cache.load() if cache else {}
    todo = [n for n, h in enumerate(hashes) if h is not None and h not in known]
    fresh: dict[int, np.ndarray] = {}
    if todo:
        log.info(
            "embedding %d of %d images (%d cached)", len(todo), len(items), len(items) - len(todo)
        )
        fresh, more_failed = _run(items, todo, extractor, settings, progress)
        failed += more_failed
        for n, vec in fresh.items():
            known[hashes[n]] = vec  # type: ignore[index]
        if cache and fresh:
            cache.save(known)
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


class _Decode:
    """Dataset of (position, preprocessed tensor or None, failure reason)."""

    def __init__(
        self, refs: Sequence[str], preprocess: Any, draft_size: int, max_pixels: int
    ) -> None:
        self.refs, self.preprocess = list(refs), preprocess
        self.draft_size, self.max_pixels = draft_size, max_pixels

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, i: int) -> tuple[int, Any, str]:
        try:
            data = read_image_bytes(self.refs[i])
            img = open_image(data, max_pixels=self.max_pixels, draft_size=self.draft_size)
            return i, self.preprocess(img), ""
        except ImageError as exc:
            return i, None, str(exc)
        except Exception as exc:  # never let one file kill a worker
            return i, None, f"unexpected error: {exc.__class__.__name__}: {exc}"


def keep_list(samples: list[tuple[int, Any, str]]) -> list[tuple[int, Any, str]]:
    """A DataLoader collate that keeps the samples as they are (failures carry None)."""
    return samples


def _run(
    items: Sequence[CatalogItem],
    todo: list[int],
    extractor: FeatureExtractor,
    settings: Settings,
    progress: Progress | None,
) -> tuple[dict[int, np.ndarray], list[tuple[str, str]]]:
    import torch
    from torch.utils.data import DataLoader

    tuning = choose(settings, extractor.device)
    torch.set_num_threads(tuning.threads)
    dataset = _Decode(
        [items[n].image for n in todo],
        extractor.preprocess,
        extractor.image_size,
        settings.max_image_pixels,
    )
    workers = min(tuning.workers, len(todo))
    loader = DataLoader(
        dataset,
        batch_size=tuning.batch_size,
        num_workers=workers,
        collate_fn=keep_list,
        **({"prefetch_factor": 2} if workers > 0 else {}),
    )
    out: dict[int, np.ndarray] = {}
    failed: list[tuple[str, str]] = []
    done = 0
    for batch in loader:
        good = [(p, t) for p, t, _ in batch if t is not None]
        failed += [(items[todo[p]].id, reason) for p, t, reason in batch if t is None]
        if good:
            pixels = torch.stack([t for _, t in good])
            if extractor.device.startswith("cuda"):
                pixels = pixels.pin_memory()
            vecs = extractor(pixels)
            for (p, _), v in zip(good, vecs, strict=True):
                out[todo[p]] = v
        done += len(batch)
        if progress:
            progress(done, len(todo))
    return out, failed


class _Cache:
    """``<cache_dir>/features/<digest of key>.npz``: content hashes and their vectors."""

    def __init__(self, cache_dir: Path, key: str) -> None:
        digest = hashlib.sha256(key.encode()).hexdigest()[:20]
        self.path = cache_dir / "features" / f"{digest}.npz"

    def load(self) -> dict[str, np.ndarray]:
        try:
            with np.load(self.path, allow_pickle=False) as data:
                return dict(zip(data["hashes"].tolist(), data["vectors"], strict=True))
        except (OSError, KeyError, ValueError):
            return {}

    def save(self, known: dict[str, np.ndarray]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp.npz")
        np.savez(tmp, hashes=np.array(list(known)), vectors=np.stack(list(known.values())))
        tmp.replace(self.path)
