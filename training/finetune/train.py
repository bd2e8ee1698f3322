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

from indexer.decoding import catalog_decoder
from indexer.tuning import choose
from search.config import Settings
from search.images import scales_gradients

from ..evaluation.features import Feed, extract
from ..evaluation.retrieval import RetrievalResult, retrieval_metrics
from .augment import Augment
from .data import TrainingSet, label_ids, pk_batches
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


@dataclass(frozen=True)
class Listeners:
    """Who hears about a run: training steps and epochs, and the image passes (features or
    views: done, total)."""

    train: Progress | None = None
    images: Callable[[int, int], None] | None = None


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


def validate(vectors: np.ndarray, data: TrainingSet) -> RetrievalResult:
    """Validation queries against every fine-tuning item (train and validation), exact."""
    queries = np.zeros(len(data.catalog), bool)
    queries[data.split.val] = True
    return retrieval_metrics(vectors, data.catalog.labels, queries & data.ok, gallery_mask=data.ok)


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


@dataclass
class Trainee:
    """What is trained and how: the vision tower, its parameter groups (learning rates),
    the options, how pictures reach it (device, precision; transform and input size for the
    backbone loop) and who hears about progress."""

    visual: Any
    groups: list[dict[str, Any]]
    opts: FinetuneOptions
    feed: Feed
    progress: Progress | None = None

    def report(self, event: TrainEvent) -> None:
        if self.progress:
            self.progress(event)


class _Epochs:
    """The end of an epoch, as both loops close it: record the validation, report it, keep
    the best weights of ``module`` (recall@1, then mAP@10), stop after ``patience`` epochs
    without a better one."""

    def __init__(self, module: Any, trainee: Trainee) -> None:
        self.module, self.trainee = module, trainee
        self.history = History()
        self.best = copy.deepcopy(module.state_dict())
        self.stale = 0

    def close(
        self, epoch: int, losses: list[float], result: RetrievalResult, t0: float, steps: int
    ) -> bool:
        """Close ``epoch``; True when training stops here."""
        opts = self.trainee.opts
        mean_loss = float(np.mean(losses))
        improved = self.history.record(epoch, mean_loss, result, time.perf_counter() - t0)
        self.stale = 0 if improved else self.stale + 1
        recall1 = result.recall.get(1)
        self.trainee.report(
            TrainEvent("validate", epoch, opts.epochs, steps, steps, mean_loss, recall1)
        )
        if improved:
            self.best = copy.deepcopy(self.module.state_dict())
        stop = self.stale >= opts.patience
        if stop:
            self.history.stopped_early = epoch < opts.epochs
        return stop

    def finish(self) -> History:
        """Load the best weights back; the run's history."""
        self.module.load_state_dict(self.best)
        return self.history


def train_head(trainee: Trainee, data: TrainingSet, raw: np.ndarray) -> History:
    """Train ``trainee.visual.head`` on precomputed trunk features ``raw`` (rows of
    ``data.catalog``)."""
    opts, device, catalog = trainee.opts, trainee.feed.device, data.catalog
    head = trainee.visual.head.to(device)
    feats = torch.from_numpy(raw).to(device)
    train = data.train
    labels = torch.from_numpy(label_ids(catalog.labels)).to(device)
    objective = Objective(opts, len(set(catalog.labels)), device)
    rng = np.random.default_rng(opts.seed)
    steps = len(
        list(pk_batches(label_ids(catalog.labels)[train], opts.batch_size, opts.per_label, rng))
    )
    opt, sched = _optimizer(trainee.groups + objective.groups(), opts, steps * opts.epochs)
    epochs = _Epochs(head, trainee)
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
            trainee.report(TrainEvent("train", epoch, opts.epochs, step, len(batches), losses[-1]))
        head.eval()
        with torch.inference_mode():
            vectors = F.normalize(head(feats).float(), dim=-1).cpu().numpy()
        if epochs.close(epoch, losses, validate(vectors, data), t0, len(batches)):
            break
    return epochs.finish()


class ModelFeatures:
    """Embeddings of the model being trained (no augmentation, eval mode, no cache)."""

    def __init__(self, visual: Any, feed: Feed) -> None:
        self.visual, self.feed = visual, feed
        self.key = "training"

    def __call__(self, batch: torch.Tensor) -> np.ndarray:
        with torch.inference_mode(), self.feed.autocast():
            out = self.visual(batch.to(self.feed.device, non_blocking=True))
        return F.normalize(out.float(), dim=-1).cpu().numpy()

    def finish(self, raw: np.ndarray) -> np.ndarray:
        return raw


def train_backbone(
    trainee: Trainee, data: TrainingSet, settings: Settings, augment: Augment | None
) -> History:
    """Train the unfrozen backbone layers and the head on augmented images.

    Photos come through the imaging module's decode workers (the catalog's decoder at the
    model's input size, ``augment`` on the decoded photo, then the model's own transform);
    forward passes follow the precision policy (fp16 with a gradient scaler).
    """
    from search.images.batch import BatchPreprocess
    from search.images.loader import ImageDataset, make_loader, model_input

    opts, feed, visual, catalog = trainee.opts, trainee.feed, trainee.visual, data.catalog
    device = feed.device
    tuning = choose(settings, device)
    torch.set_num_threads(tuning.threads)
    visual.to(device)
    train = data.train
    labels_np = label_ids(catalog.labels)
    prep = BatchPreprocess(feed.preprocess)
    decoder = catalog_decoder(
        settings.indexing.max_image_pixels,
        feed.image_size,
        allow_private=settings.indexing.allow_private_urls,
    )
    dataset = ImageDataset([catalog.items[i].image for i in train], prep, decoder, augment=augment)
    objective = Objective(opts, len(set(catalog.labels)), device)
    rng = np.random.default_rng(opts.seed)
    steps = len(list(pk_batches(labels_np[train], opts.batch_size, opts.per_label, rng)))
    opt, sched = _optimizer(trainee.groups + objective.groups(), opts, steps * opts.epochs)
    scaler = torch.amp.GradScaler("cuda", enabled=scales_gradients(device, feed.precision))
    features = ModelFeatures(visual, feed)
    epochs = _Epochs(visual, trainee)
    for epoch in range(1, opts.epochs + 1):
        t0, losses = time.perf_counter(), []
        visual.eval()  # BatchNorm statistics stay frozen: small batches on a CPU
        batches = list(pk_batches(labels_np[train], opts.batch_size, opts.per_label, rng))
        loader = make_loader(
            dataset, batches, workers=tuning.workers, pin_memory=device.startswith("cuda")
        )
        for step, batch in enumerate(loader, 1):
            index, _, pixels = model_input(batch, prep, device, decoder)
            if pixels is None:
                continue  # no photo of the batch could be read (extraction reported them)
            y = torch.from_numpy(labels_np[train[index]]).to(device)
            with feed.autocast():
                out = visual(pixels)
            z = F.normalize(out.float(), dim=-1)
            loss = objective(z, y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            losses.append(loss.item())
            trainee.report(TrainEvent("train", epoch, opts.epochs, step, len(batches), losses[-1]))
        vectors = extract(catalog.items, features, settings, use_cache=False).vectors
        if epochs.close(epoch, losses, validate(vectors, data), t0, len(batches)):
            break
    return epochs.finish()
