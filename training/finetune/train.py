"""Training loops: a head on cached features, or backbone layers on augmented images.

Both loops validate after every epoch (recall@1 of the validation queries against every
fine-tuning item, exact search), keep the best weights (recall@1, then mAP@10: the
verdict's own order) and stop early after ``patience`` epochs without a better one. Device-agnostic: CUDA gets autocast (bf16, or fp16 with
a gradient scaler), pinned memory and non-blocking copies; the CPU runs plain fp32.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from indexer.tuning import choose
from search.config import Settings

from ..evaluation.features import autocast, extract
from ..evaluation.labels import LabelledCatalog
from ..evaluation.retrieval import RetrievalResult, retrieval_metrics
from .data import AugmentedImages, Split, label_ids, pk_batches
from .losses import CosineClassifier, metric_loss
from .options import FinetuneOptions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainEvent:
    """Progress of a run: ``phase`` is "train" (after a step) or "validate" (epoch end)."""

    phase: str
    epoch: int
    epochs: int
    step: int
    steps: int
    loss: float | None = None
    val_recall1: float | None = None


Progress = Callable[[TrainEvent], None]


@dataclass
class History:
    epochs: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_recall1: float = -1.0
    best_map10: float = -1.0
    stopped_early: bool = False
    best_result: RetrievalResult | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("best_result", None)
        return data

    def record(self, epoch: int, loss: float, result: RetrievalResult, seconds: float) -> bool:
        """Log an epoch; True when it is the best so far."""
        r1 = result.recall.get(1, float("nan"))
        self.epochs.append(
            {
                "epoch": epoch,
                "loss": round(loss, 5),
                "val_recall@1": r1,
                "val_mAP@10": result.map_at.get(10, float("nan")),
                "seconds": round(seconds, 2),
            }
        )
        log.info("epoch %d: loss %.4f, validation recall@1 %.4f", epoch, loss, r1)
        key = (r1, result.map_at.get(10, float("nan")))  # the verdict's order: R@1, then mAP
        best = (self.best_recall1, self.best_map10)
        if self.best_result is None or key > best:
            self.best_map10 = key[1]
            self.best_epoch, self.best_recall1, self.best_result = epoch, r1, result
            return True
        return False


def validate(
    vectors: np.ndarray, catalog: LabelledCatalog, split: Split, ok: np.ndarray
) -> RetrievalResult:
    """Validation queries against every fine-tuning item (train and validation), exact."""
    queries = np.zeros(len(catalog), bool)
    queries[split.val] = True
    return retrieval_metrics(vectors, catalog.labels, queries & ok, gallery_mask=ok)


def _optimizer(groups: list[dict[str, Any]], opts: FinetuneOptions, steps: int) -> tuple[Any, Any]:
    params = [{k: v for k, v in g.items() if k != "name"} for g in groups]
    opt = torch.optim.AdamW(params, weight_decay=opts.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps))
    return opt, sched


class Objective:
    """The metric loss, plus ``ce_weight`` x a cosine classifier's cross-entropy."""

    def __init__(self, opts: FinetuneOptions, labels: int, device: str) -> None:
        self.opts = opts
        self.classifier = (
            CosineClassifier(opts.dim, labels, opts.temperature).to(device)
            if opts.ce_weight > 0
            else None
        )

    def groups(self) -> list[dict[str, Any]]:
        if self.classifier is None:
            return []
        return [{"params": list(self.classifier.parameters()), "lr": self.opts.lr, "name": "ce"}]

    def __call__(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        o = self.opts
        loss = metric_loss(o.loss, z, y, temperature=o.temperature, margin=o.margin)
        if self.classifier is not None:
            loss = loss + o.ce_weight * F.cross_entropy(self.classifier(z), y)
        return loss


def _close_epoch(
    history: History,
    epoch: int,
    losses: list[float],
    result: Any,
    t0: float,
    n_batches: int,
    stale: int,
    opts: FinetuneOptions,
    progress: Progress | None,
) -> tuple[bool, int, bool]:
    """Record an epoch's validation, report it, and decide on early stopping.

    Returns (improved, epochs without improvement, stop now).
    """
    mean_loss = float(np.mean(losses))
    improved = history.record(epoch, mean_loss, result, time.perf_counter() - t0)
    stale = 0 if improved else stale + 1
    if progress:
        progress(
            TrainEvent(
                "validate",
                epoch,
                opts.epochs,
                n_batches,
                n_batches,
                mean_loss,
                result.recall.get(1),
            )
        )
    stop = stale >= opts.patience
    if stop:
        history.stopped_early = epoch < opts.epochs
    return improved, stale, stop


def train_head(
    visual: Any,
    raw: np.ndarray,
    ok: np.ndarray,
    catalog: LabelledCatalog,
    split: Split,
    groups: list[dict[str, Any]],
    opts: FinetuneOptions,
    device: str,
    progress: Progress | None = None,
) -> History:
    """Train ``visual.head`` on precomputed trunk features ``raw`` (rows of ``catalog``)."""
    head = visual.head.to(device)
    feats = torch.from_numpy(raw).to(device)
    train = split.train[ok[split.train]]
    labels = torch.from_numpy(label_ids(catalog.labels)).to(device)
    objective = Objective(opts, len(set(catalog.labels)), device)
    rng = np.random.default_rng(opts.seed)
    steps = len(
        list(pk_batches(label_ids(catalog.labels)[train], opts.batch_size, opts.per_label, rng))
    )
    opt, sched = _optimizer(groups + objective.groups(), opts, steps * opts.epochs)
    history, best, stale = History(), copy.deepcopy(head.state_dict()), 0
    for epoch in range(1, opts.epochs + 1):
        t0, losses = time.perf_counter(), []
        head.train()
        batches = list(
            pk_batches(labels[train].cpu().numpy(), opts.batch_size, opts.per_label, rng)
        )
        for step, b in enumerate(batches, 1):
            idx = torch.from_numpy(train[b]).to(device)
            z = F.normalize(head(feats[idx]).float(), dim=-1)
            loss = objective(z, labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
            if progress:
                progress(TrainEvent("train", epoch, opts.epochs, step, len(batches), losses[-1]))
        head.eval()
        with torch.inference_mode():
            vectors = F.normalize(head(feats).float(), dim=-1).cpu().numpy()
        result = validate(vectors, catalog, split, ok)
        improved, stale, stop = _close_epoch(
            history, epoch, losses, result, t0, len(batches), stale, opts, progress
        )
        if improved:
            best = copy.deepcopy(head.state_dict())
        if stop:
            break
    head.load_state_dict(best)
    return history


class ModelFeatures:
    """Embeddings of the model being trained (no augmentation, eval mode, no cache)."""

    def __init__(self, visual: Any, device: str, image_size: int, preprocess: Any) -> None:
        self.visual, self.device, self.image_size, self.preprocess = (
            visual,
            device,
            image_size,
            preprocess,
        )
        self.key = "training"

    def __call__(self, batch: torch.Tensor) -> np.ndarray:
        with torch.inference_mode(), autocast(self.device):
            out = self.visual(batch.to(self.device, non_blocking=True))
        return F.normalize(out.float(), dim=-1).cpu().numpy()

    def finish(self, raw: np.ndarray) -> np.ndarray:
        return raw


def train_backbone(
    visual: Any,
    catalog: LabelledCatalog,
    split: Split,
    ok: np.ndarray,
    groups: list[dict[str, Any]],
    opts: FinetuneOptions,
    settings: Settings,
    preprocess: Any,
    image_size: int,
    augment: Any,
    device: str,
    progress: Progress | None = None,
) -> History:
    """Train the unfrozen backbone layers and the head on augmented images."""
    from torch.utils.data import DataLoader

    tuning = choose(settings, device)
    torch.set_num_threads(tuning.threads)
    visual.to(device)
    train = split.train[ok[split.train]]
    labels_np = label_ids(catalog.labels)
    dataset = AugmentedImages(
        [catalog.items[i].image for i in train], augment, preprocess, image_size
    )
    objective = Objective(opts, len(set(catalog.labels)), device)
    rng = np.random.default_rng(opts.seed)
    steps = len(list(pk_batches(labels_np[train], opts.batch_size, opts.per_label, rng)))
    opt, sched = _optimizer(groups + objective.groups(), opts, steps * opts.epochs)
    scaler = torch.amp.GradScaler(
        "cuda", enabled=device.startswith("cuda") and not torch.cuda.is_bf16_supported()
    )
    features = ModelFeatures(visual, device, image_size, preprocess)
    history, best, stale = History(), copy.deepcopy(visual.state_dict()), 0
    for epoch in range(1, opts.epochs + 1):
        t0, losses = time.perf_counter(), []
        visual.eval()  # BatchNorm statistics stay frozen: small batches on a CPU
        batches = list(pk_batches(labels_np[train], opts.batch_size, opts.per_label, rng))
        loader = DataLoader(
            dataset,
            batch_sampler=batches,
            num_workers=tuning.workers,
            pin_memory=device.startswith("cuda"),
        )
        for step, (pixels, b) in enumerate(zip(loader, batches, strict=True), 1):
            y = torch.from_numpy(labels_np[train[b]]).to(device)
            with autocast(device):
                out = visual(pixels.to(device, non_blocking=True))
            z = F.normalize(out.float(), dim=-1)
            loss = objective(z, y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            losses.append(loss.item())
            if progress:
                progress(TrainEvent("train", epoch, opts.epochs, step, len(batches), losses[-1]))
        vectors = extract(catalog.items, features, settings, use_cache=False).vectors
        result = validate(vectors, catalog, split, ok)
        improved, stale, stop = _close_epoch(
            history, epoch, losses, result, t0, len(batches), stale, opts, progress
        )
        if improved:
            best = copy.deepcopy(visual.state_dict())
        if stop:
            break
    visual.load_state_dict(best)
    return history
