"""``finetune`` with the instance objective: from a catalog to an exported, judged model.

Steps: read the catalog (no labels needed); split items into train / validation /
held-out by a hash of their id (the held-out items are ``vsearch eval --task instance``'s
queries with the same ``--seed`` and ``--holdout``); build the model (the base's trunk and
an identity head, so it starts as the base exactly); decode each photo once and cache the
frozen bottom's maps of the clean photo, its training views and its judging views; train,
judge, refit; export the folder with the report and the verdict that ``promote`` reads.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from indexer.catalog import CatalogItem
from indexer.tuning import choose
from search.config import Settings
from search.embedder import Embedder
from search.errors import ConfigError

from ..evaluation.backgrounds import load_backgrounds
from ..evaluation.features import Feed
from ..evaluation.instance import group_ids
from ..evaluation.labels import holdout_mask
from ..evaluation.report import format_rows, json_safe
from ..evaluation.views import ViewJob, cache_views, view_budget
from .export import Export, export_model
from .instance import InstanceData, InstanceOutcome, adapt
from .model import TEXT_PLACEHOLDER, base_model_cfg, build_model
from .options import FinetuneOptions
from .towers import SplitTower, identity_head
from .train import Listeners

log = logging.getLogger(__name__)
MIN_JUDGED = 8  # held-out items below which no verdict can be significant
CATEGORY = "category"


@dataclass
class InstanceReport:
    """What ``vsearch finetune`` prints and writes for the instance objective."""

    output: str
    base_model: str
    options: dict[str, Any]
    items: dict[str, int]
    outcome: InstanceOutcome
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def improved(self) -> bool:
        return self.outcome.verdict.improved

    @property
    def strategy(self) -> str:
        return str(self.options["strategy"])

    def to_dict(self) -> dict[str, Any]:
        o = self.outcome
        return json_safe(
            {
                "output": self.output,
                "model": f"local-dir:{self.output}",
                "base_model": self.base_model,
                "objective": "instance",
                "strategy": self.strategy,
                "improved": self.improved,
                "verdict": o.verdict.to_dict(),
                "items": self.items,
                "validation": {"before": o.base_val.to_dict(), "after": o.val.to_dict()},
                "held_out": {"before": o.base_test.to_dict(), "after": o.test.to_dict()},
                "held_out_after_refit_in_sample": o.refit_test.to_dict() if o.refit_test else None,
                "history": o.history.to_dict(),
                "options": self.options,
                "seconds": round(self.seconds, 1),
                "timings": {k: round(v, 1) for k, v in self.timings.items()},
            }
        )

    def table(self) -> str:
        o = self.outcome
        names = o.base_test.names()
        rows = [
            [label, str(s.rank.size)] + s.cells(names)
            for label, s in (
                ("held-out, base", o.base_test),
                (f"held-out, adapted ({self.strategy})", o.test),
            )
        ]
        lines = format_rows(["find this product", "queries", *names], rows)
        h = o.history
        lines.append(
            f"best epoch {h.best_epoch} of {len(h.epochs)}"
            + (" (stopped early)" if h.stopped_early else "")
            + (f"; refit on every item for {h.refit_epochs} epochs" if h.refit_epochs else "")
            + f"; train {self.items['train']}, validation {self.items['val']}, held out "
            f"{self.items['held_out']}; {self.seconds:.0f} s"
        )
        lines.append(("improved: " if self.improved else "NOT improved: ") + o.verdict.reason)
        return "\n".join(lines)


def split_items(ids: list[str], opts: FinetuneOptions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, validation, held-out) positions; held-out = eval's queries (same seed)."""
    test = holdout_mask(ids, opts.holdout, opts.seed)
    rest = np.nonzero(~test)[0]
    val_rest = holdout_mask([ids[i] for i in rest], opts.val_fraction, opts.seed, salt="validation")
    train, val = rest[~val_rest], rest[val_rest]
    if opts.max_items and train.size > opts.max_items:
        rng = np.random.default_rng(opts.seed)
        train = np.sort(rng.choice(train, size=opts.max_items, replace=False))
    test_pos = np.nonzero(test)[0]
    if test_pos.size < MIN_JUDGED or val.size < MIN_JUDGED // 2 or train.size < 8:
        raise ConfigError(
            f"too few items to adapt and judge honestly: {train.size} to train, {val.size} to "
            f"validate, {test_pos.size} held out (need at least 8, {MIN_JUDGED // 2} and "
            f"{MIN_JUDGED}; about 60 items or more, or a larger --holdout)"
        )
    return train, val, test_pos


def finetune_instance(
    items: list[CatalogItem],
    settings: Settings,
    out: Path,
    opts: FinetuneOptions,
    listeners: Listeners | None = None,
) -> InstanceReport:
    """Instance discrimination on ``items``, judged on held-out items; the model to ``out``."""
    listeners = listeners or Listeners()
    started = time.perf_counter()
    timings: dict[str, float] = {}
    ids = [i.id for i in items]
    train, val, test = split_items(ids, opts)
    base = Embedder.from_settings(settings)
    model, cfg = _identity_model(base, settings, opts)
    tower = SplitTower(model.visual, opts.unfreeze)
    tuning = choose(settings, base.device)
    torch.set_num_threads(tuning.threads)
    rng = np.random.default_rng(opts.seed)
    seen = np.sort(rng.choice(train, size=min(train.size, max(val.size, 32)), replace=False))
    fit_items = np.arange(len(items)) if opts.refit else train
    views = _views_per_item(tower, base, fit_items.size, opts)
    t0 = time.perf_counter()
    job = ViewJob(
        [i.image for i in items],
        ids,
        {
            "clean": (range(len(items)), 1),
            "train": (fit_items, views),
            "eval": (np.concatenate([val, test, seen]), opts.eval_views),
        },
        backgrounds=_pools(opts),
        seed=opts.seed,
        max_pixels=settings.indexing.max_image_pixels,
        allow_private=settings.indexing.allow_private_urls,
    )
    sets, failed = cache_views(job, tower.bottom, Feed.of(base), tuning, listeners.images)
    timings["views"] = time.perf_counter() - t0
    for item_id, reason in failed:
        log.warning("skipped %s: %s", item_id, reason)
    cats = [str(i.metadata.get(CATEGORY, "")) for i in items]
    data = InstanceData(
        clean=sets["clean"],
        train_views=sets["train"],
        eval_views=sets["eval"],
        groups=group_ids(items, opts.label_column),
        categories=cats if any(cats) else None,
        train=train[sets["train"].ok[train] & sets["clean"].ok[train]],
        val=val,
        test=test,
        seen=seen,
    )
    t0 = time.perf_counter()
    outcome = adapt(tower, data, opts, Feed.of(base), listeners.train)
    timings["training"] = time.perf_counter() - t0
    report = InstanceReport(
        output=str(out),
        base_model=base.info.name,
        options=opts.to_dict(),
        items={
            "catalog": len(items),
            "train": int(data.train.size),
            "val": int(val.size),
            "held_out": int(test.size),
            "views_per_item": views,
            "failed": len(failed),
        },
        outcome=outcome,
        timings=timings,
    )
    report.seconds = time.perf_counter() - started
    vsearch = {
        "base_model": base.info.to_dict(),
        "objective": "instance",
        "strategy": opts.strategy,
        "improved": report.improved,
        "verdict": outcome.verdict.to_dict(),
        "options": opts.to_dict(),
    }
    export_model(Export(model, cfg, base.info.preprocess, vsearch, report.to_dict()), out)
    return report


def _identity_model(base: Embedder, settings: Settings, opts: FinetuneOptions) -> tuple[Any, dict]:
    """The base's tower with a square linear head set to the identity: the base exactly."""
    cfg = copy.deepcopy(base_model_cfg(base, settings.model.cache_dir))
    cfg["embed_dim"] = base.torch_model.visual.trunk.num_features
    cfg["vision_cfg"].update(timm_proj="linear", timm_model_pretrained=False)
    cfg["text_cfg"] = copy.deepcopy(TEXT_PLACEHOLDER)
    model = build_model(cfg, base, opts.seed)
    identity_head(model.visual)
    model.visual.to(base.device).eval()
    return model, cfg


def _views_per_item(tower: SplitTower, base: Embedder, items: int, opts: FinetuneOptions) -> int:
    """Training views per item that fit ``opts.cache_mb`` (a warning when fewer than asked)."""
    size = base.info.image_size
    with torch.inference_mode():
        probe = tower.bottom(torch.zeros(1, 3, size, size, device=base.device))
    views = view_budget(items, probe[0].numel(), opts.views, opts.cache_mb)
    if views < opts.views:
        log.warning(
            "%d training views per item fit --cache-mb %d (asked %d)",
            views,
            opts.cache_mb,
            opts.views,
        )
    return views


def _pools(opts: FinetuneOptions) -> dict[str, list[Any]]:
    pools = load_backgrounds(opts.backgrounds, opts.seed)
    log.info(
        "background photos: %s (%d training, %d judging)",
        pools.source,
        len(pools.train),
        len(pools.eval),
    )
    return {"train": pools.train, "eval": pools.eval}
