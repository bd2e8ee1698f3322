"""Instance discrimination: teach the model that a shopper's photo of a product is that product.

Works with one photo per product. Every catalog photo and its shopper-style views are
positives; every other product in the batch is a negative (SupCon / SimCLR-style InfoNCE;
items of one product group, when the catalog has them, are positives too). Batches are
made of neighbourhoods in the base model's space, so the negatives are the look-alikes
that confuse shoppers (hard negatives). What the backbone knows is kept: an identity-
initialised head, only the last stages train at small layer-wise rates, BatchNorm frozen,
and the catalog photos' new embeddings are distilled towards the base's.

Honest by construction: items are split (by a hash of their id, as ``vsearch eval``
does) into training items, validation items that pick the epoch, and held-out items that
judge the result; judging views come from another distortion family and other
backgrounds than training views. With ``refit``, a model that passed is then trained again
on every item with the chosen number of epochs (the exported model), so every product of
the catalog benefits.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..evaluation.features import Feed
from ..evaluation.instance import query_scores
from ..evaluation.scores import QueryScores, Verdict, judge
from ..evaluation.views import ViewSet
from .batches import nearest, neighbourhood_batches
from .losses import koleo_loss, supcon_loss
from .options import FinetuneOptions
from .towers import SplitTower
from .train import Progress, TrainEvent

log = logging.getLogger(__name__)


@dataclass
class InstanceData:
    """Cached maps and the split of one catalog (positions into the catalog)."""

    clean: ViewSet
    train_views: ViewSet
    eval_views: ViewSet
    groups: np.ndarray  # product group per item (the item itself when there is none)
    categories: list[str] | None
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    seen: np.ndarray  # training items that also have judging views


@dataclass
class InstanceHistory:
    epochs: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0  # best on validation items (the judged model)
    seen_epoch: int = 0  # best on trained items' judging views, unseen items not below base
    stopped_early: bool = False
    refit_epochs: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "epochs": self.epochs,
            "best_epoch": self.best_epoch,
            "seen_epoch": self.seen_epoch,
            "stopped_early": self.stopped_early,
            "refit_epochs": self.refit_epochs,
        }


@dataclass
class InstanceOutcome:
    base_val: QueryScores
    val: QueryScores
    base_test: QueryScores
    test: QueryScores
    verdict: Verdict
    history: InstanceHistory
    refit_test: QueryScores | None = None


class Embed:
    """Unit embeddings of cached maps through the tower's trainable top (eval mode)."""

    def __init__(self, tower: SplitTower, feed: Feed, batch: int = 256) -> None:
        self.tower, self.feed, self.device, self.batch = tower, feed, feed.device, batch

    def __call__(self, maps: torch.Tensor) -> np.ndarray:
        out = []
        self.tower.eval()
        with torch.inference_mode(), self.feed.autocast():
            for s in range(0, maps.shape[0], self.batch):
                x = maps[s : s + self.batch].to(self.device, torch.float32, non_blocking=True)
                out.append(F.normalize(self.tower(x).float(), dim=-1).cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, 1), np.float32)


class Trainer:
    """One training run of the top (from the initial weights) on a set of items."""

    def __init__(
        self,
        tower: SplitTower,
        data: InstanceData,
        base_clean: np.ndarray,
        opts: FinetuneOptions,
        feed: Feed,
    ) -> None:
        self.tower, self.data, self.opts, self.feed = tower, data, opts, feed
        self.device = feed.device
        self.base_clean = torch.from_numpy(base_clean)
        self.initial = copy.deepcopy(tower.state_dict())
        self.rng = np.random.default_rng(opts.seed)
        self._near: dict[bytes, np.ndarray] = {}
        cats = data.categories
        self.cat_ids = (
            torch.from_numpy(
                np.unique(np.asarray(cats, dtype=object).astype(str), return_inverse=True)[1]
            )
            if cats and opts.category_weight > 0
            else None
        )

    def reset(self) -> None:
        self.tower.load_state_dict(self.initial)

    def optimizer(self, steps: int) -> tuple[Any, Any]:
        o = self.opts
        groups = self.tower.param_groups(o.lr, o.backbone_lr_scale, o.layer_decay)
        params = [{k: v for k, v in g.items() if k != "name"} for g in groups]
        opt = torch.optim.AdamW(params, weight_decay=0.0)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps))
        return opt, sched

    def steps_per_epoch(self, items: np.ndarray) -> int:
        full, rest = divmod(len(items), self.opts.batch_size)
        return full + (1 if rest > 1 else 0)

    def _neighbours(self, items: np.ndarray) -> np.ndarray:
        key = items.tobytes()
        if key not in self._near:
            self._near[key] = nearest(self.base_clean.numpy()[items])
        return self._near[key]

    def epoch(
        self, items: np.ndarray, opt: Any, sched: Any, epoch: int, progress: Progress | None
    ) -> float:
        o, d = self.opts, self.data
        batches = neighbourhood_batches(items, self._neighbours(items), o.batch_size, self.rng)
        self.tower.eval()  # BatchNorm statistics stay frozen
        losses = []
        v = d.train_views.per_item
        for step, b in enumerate(batches, 1):
            pick = np.stack([self.rng.choice(v, size=2, replace=False) for _ in b])
            x = torch.cat(
                [
                    d.clean.maps[b, 0],
                    d.train_views.maps[b, pick[:, 0]],
                    d.train_views.maps[b, pick[:, 1]],
                ]
            ).to(self.device, torch.float32, non_blocking=True)
            with self.feed.autocast():
                z = F.normalize(self.tower(x).float(), dim=-1)
            groups = torch.from_numpy(d.groups[b]).to(self.device)
            labels = groups.repeat(3)
            loss = supcon_loss(z, labels, o.temperature)
            clean = z[: len(b)]
            base = self.base_clean[b].to(self.device)
            loss = loss + o.distill * (1.0 - (clean * base).sum(-1)).mean()
            if o.entropy > 0:
                loss = loss + o.entropy * koleo_loss(z, labels)
            if self.cat_ids is not None:
                cat = self.cat_ids[b].to(self.device).repeat(3)
                loss = loss + o.category_weight * supcon_loss(z, cat, o.temperature)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.item()))
            if progress:
                progress(TrainEvent("train", epoch, o.epochs, step, len(batches), losses[-1]))
        return float(np.mean(losses)) if losses else float("nan")


def adapt(
    tower: SplitTower,
    data: InstanceData,
    opts: FinetuneOptions,
    feed: Feed,
    progress: Progress | None = None,
) -> InstanceOutcome:
    """Train on ``data.train``, pick the epoch on ``data.val``, judge on ``data.test``.

    Two curves are followed per epoch, both on judging views (other backgrounds and
    distortions than training): validation items (never trained on; they pick the judged
    epoch) and a sample of training items (``data.seen``: what shoppers get for products
    the model trained on, i.e. every product after a refit). The refit trains as many
    epochs as the seen curve liked best among epochs where unseen products were still at
    least as well served as by the base model, so products added after the adaptation do
    not lose.
    """
    embed = Embed(tower, feed)
    base_clean = embed(data.clean.maps[:, 0])
    base_val = query_scores(embed, data, data.val)
    base_test = query_scores(embed, data, data.test)
    log.info(
        "base: validation recall@1 %.4f, held-out recall@1 %.4f",
        base_val.criterion()[0],
        base_test.criterion()[0],
    )
    trainer = Trainer(tower, data, base_clean, opts, feed)
    history = InstanceHistory()
    opt, sched = trainer.optimizer(trainer.steps_per_epoch(data.train) * opts.epochs)
    best_state, best_key, best_val = (
        copy.deepcopy(tower.state_dict()),
        base_val.criterion(),
        base_val,
    )
    floor = base_val.criterion()
    best_seen, stale = query_scores(embed, data, data.seen).criterion(), 0
    for epoch in range(1, opts.epochs + 1):
        t0 = time.perf_counter()
        loss = trainer.epoch(data.train, opt, sched, epoch, progress)
        gallery = embed(data.clean.maps[np.nonzero(data.clean.ok)[0], 0])
        val = query_scores(embed, data, data.val, gallery)
        key, seen = val.criterion(), query_scores(embed, data, data.seen, gallery).criterion()
        history.epochs.append(
            {
                "epoch": epoch,
                "loss": round(loss, 5),
                "val_R@1": round(key[0], 4),
                "val_MRR@10": round(key[1], 4),
                "seen_R@1": round(seen[0], 4),
                "seconds": round(time.perf_counter() - t0, 2),
            }
        )
        log.info(
            "epoch %d: loss %.4f, validation recall@1 %.4f (unseen items), %.4f (trained items)",
            epoch,
            loss,
            key[0],
            seen[0],
        )
        if progress:
            progress(TrainEvent("validate", epoch, opts.epochs, 0, 0, loss, key[0]))
        improved = False
        if key > best_key:
            best_key, best_val, history.best_epoch, improved = key, val, epoch, True
            best_state = copy.deepcopy(tower.state_dict())
        if key >= floor and seen > best_seen:
            best_seen, history.seen_epoch, improved = seen, epoch, True
        stale = 0 if improved else stale + 1
        if stale >= opts.patience:
            history.stopped_early = epoch < opts.epochs
            break
    tower.load_state_dict(best_state)
    test = query_scores(embed, data, data.test)
    verdict = judge(test, base_test, seed=opts.seed)
    if history.best_epoch == 0:
        verdict = Verdict(
            False,
            "no epoch beat the base model on validation",
            verdict.queries,
            verdict.items,
            verdict.changes,
        )
    outcome = InstanceOutcome(base_val, best_val, base_test, test, verdict, history)
    if opts.refit and verdict.improved:
        _refit(trainer, data, max(history.best_epoch, history.seen_epoch), history, progress)
        outcome.refit_test = query_scores(embed, data, data.test)
    return outcome


def _refit(
    trainer: Trainer,
    data: InstanceData,
    epochs: int,
    history: InstanceHistory,
    progress: Progress | None,
) -> None:
    """Train again from the initial weights on every item for ``epochs`` epochs, on the
    selection run's schedule (the learning rate decays over ``opts.epochs``): the refit
    stops where the chosen epoch stood, not at the end of a shorter, steeper schedule."""
    items = np.nonzero(data.clean.ok & data.train_views.ok)[0]
    trainer.reset()
    opt, sched = trainer.optimizer(trainer.steps_per_epoch(items) * trainer.opts.epochs)
    log.info("refit on all %d items for %d epochs", items.size, epochs)
    for epoch in range(1, epochs + 1):
        trainer.epoch(items, opt, sched, epoch, progress)
    history.refit_epochs = epochs
