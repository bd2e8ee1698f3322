"""``finetune``: adapt a backbone to a labelled catalog and export it as a model folder.

Steps: load the labelled catalog; keep ``vsearch eval``'s held-out queries out; split the
rest into train and validation; compute the base's trunk features once (cached); measure
the base on the validation split; train per strategy with early stopping; measure again;
export the best weights with a report. A result that is not better than its base is
reported as such (``improved`` false) and must not be promoted.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from search.config import Settings
from search.embedder import Embedder
from search.errors import CatalogError

from ..catalog import CatalogItem, load_catalog
from ..evaluation.features import TrunkFeatures, extract
from ..evaluation.labels import load_labelled
from ..evaluation.report import format_rows
from ..evaluation.retrieval import RetrievalResult
from .adapt import finetune_instance
from .augment import product_augment
from .data import add_training_items, make_split
from .export import export_model, prepare_output
from .model import base_model_cfg, build_model, configure_trainable, new_model_cfg
from .options import FinetuneOptions
from .train import History, Progress, train_backbone, train_head, validate

log = logging.getLogger(__name__)
FeatureProgress = Callable[[int, int], None]


@dataclass
class FinetuneReport:
    """Before/after validation metrics, the training history and where the model went."""

    output: str
    base_model: str
    strategy: str
    items: dict[str, int]
    before: RetrievalResult
    after: RetrievalResult
    history: History
    options: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def improved(self) -> bool:
        """Better recall@1 on validation (or the same recall@1 and a better mAP@10)."""
        a = (self.after.recall.get(1, 0.0), self.after.map_at.get(10, 0.0))
        b = (self.before.recall.get(1, 0.0), self.before.map_at.get(10, 0.0))
        return a > b

    def to_dict(self) -> dict[str, Any]:
        return {
            "output": self.output,
            "model": f"local-dir:{self.output}",
            "base_model": self.base_model,
            "strategy": self.strategy,
            "improved": self.improved,
            "items": self.items,
            "before": self.before.to_dict(),
            "after": self.after.to_dict(),
            "history": self.history.to_dict(),
            "options": self.options,
            "seconds": round(self.seconds, 1),
        }

    def table(self) -> str:
        ks = sorted(self.before.recall)
        head = ["validation", "queries"] + [f"R@{k}" for k in ks] + ["mAP@10"]
        rows = [
            [name, str(r.queries)]
            + [f"{r.recall[k]:.4f}" for k in ks]
            + [f"{r.map_at.get(10, float('nan')):.4f}"]
            for name, r in (
                ("before (" + self.base_model + ")", self.before),
                (f"after ({self.strategy})", self.after),
            )
        ]
        lines = format_rows(head, rows)
        h = self.history
        lines.append(
            f"best epoch {h.best_epoch} of {len(h.epochs)}"
            + (" (stopped early)" if h.stopped_early else "")
            + f"; train {self.items['train']}, validation {self.items['val']}, "
            f"held out for eval {self.items['held_out']}; {self.seconds:.0f} s"
        )
        return "\n".join(lines)


def resolve_objective(
    source: str | Path, settings: Settings, opts: FinetuneOptions
) -> tuple[str, list[CatalogItem]]:
    """The objective ``auto`` stands for, and the catalog's items.

    ``label`` when a label column is named (``id`` excepted: every item is its own
    product) or a ``product`` column groups photos of one product; otherwise ``instance``.
    A category column alone never selects ``label``: categories are too coarse to say
    which product a shopper photographed.
    """
    items = load_catalog(
        source,
        id_column=opts.id_column,
        image_column=opts.image_column,
        numeric_columns=(),
        allowed_roots=settings.allowed_roots,
    ).items
    if not items:
        raise CatalogError(f"catalog {source} has no usable images")
    if opts.objective != "auto":
        return opts.objective, items
    if opts.label_column == "id":
        return "instance", items
    if opts.label_column:
        return "label", items
    products = Counter(str(i.metadata.get("product", "")) for i in items)
    products.pop("", None)
    grouped = sum(c for c in products.values() if c > 1)
    return ("label" if len(products) > 1 and grouped >= len(items) / 2 else "instance"), items


def finetune(
    source: str | Path,
    settings: Settings,
    output: str | Path,
    options: FinetuneOptions | None = None,
    *,
    overwrite: bool = False,
    progress: Progress | None = None,
    feature_progress: FeatureProgress | None = None,
) -> FinetuneReport:
    """Fine-tune ``settings.model`` on the catalog at ``source``; write it to ``output``."""
    opts = options or FinetuneOptions()
    started = time.perf_counter()
    out = prepare_output(output, overwrite)
    torch.manual_seed(opts.seed)
    np.random.seed(opts.seed)  # noqa: NPY002 - DataLoader workers derive from global seeds
    objective, items = resolve_objective(source, settings, opts)
    if objective == "instance":
        return finetune_instance(
            items,
            settings,
            out,
            opts.resolved("instance"),
            progress=progress,
            view_progress=feature_progress,
        )
    opts = opts.resolved("label")
    catalog = load_labelled(
        source,
        opts.label_column,
        id_column=opts.id_column,
        image_column=opts.image_column,
        allowed_roots=settings.allowed_roots,
    )
    pool, split = make_split(
        catalog,
        holdout=opts.holdout,
        val_fraction=opts.val_fraction,
        seed=opts.seed,
        max_items=opts.max_items,
    )
    dropped = 0
    if opts.extra_train:
        extra = load_labelled(
            opts.extra_train,
            catalog.label_column,
            id_column=opts.id_column,
            image_column=opts.image_column,
            allowed_roots=settings.allowed_roots,
        )
        pool, split, dropped = add_training_items(pool, split, extra, catalog)
        log.info(
            "extra training catalog %s: %d items added, %d dropped (also in the catalog)",
            opts.extra_train,
            len(extra) - dropped,
            dropped,
        )
    base = Embedder.from_settings(settings)
    base_cfg = base_model_cfg(base, settings.cache_dir)
    trunk = TrunkFeatures.of(base)
    feats = extract(pool.items, trunk, settings, progress=feature_progress)
    for item_id, reason in feats.failed:
        log.warning("skipped %s: %s", item_id, reason)
    before = validate(trunk.finish(feats.vectors), pool, split, feats.ok)
    log.info("base %s: validation recall@1 %.4f", base.info.name, before.recall.get(1, 0.0))
    cfg = new_model_cfg(base_cfg, opts)
    model = build_model(cfg, base, opts.seed)
    visual = model.visual
    groups = configure_trainable(visual, opts)
    device = base.device
    if opts.strategy == "head":
        history = train_head(
            visual, feats.vectors, feats.ok, pool, split, groups, opts, device, progress
        )
    else:
        augment = product_augment(base.info.image_size) if opts.augment else None
        history = train_backbone(
            visual,
            pool,
            split,
            feats.ok,
            groups,
            opts,
            settings,
            base.preprocess,
            base.info.image_size,
            augment,
            device,
            progress,
        )
    after = history.best_result or before
    report = FinetuneReport(
        output=str(out),
        base_model=base.info.name,
        strategy=opts.strategy,
        items={
            "train": int(split.train.size),
            "val": int(split.val.size),
            "held_out": split.held_out,
            "extra_dropped": dropped,
            "failed": len(feats.failed),
        },
        before=before,
        after=after,
        history=history,
        options=opts.to_dict(),
    )
    report.seconds = time.perf_counter() - started
    vsearch = {
        "base_model": base.info.to_dict(),
        "strategy": opts.strategy,
        "improved": report.improved,
        "metrics": {"before": before.to_dict(), "after": after.to_dict()},
        "options": opts.to_dict(),
    }
    export_model(model.cpu(), out, cfg, base.info.preprocess, vsearch, report.to_dict())
    if not report.improved:
        log.warning(
            "the fine-tuned model is NOT better than its base on validation (recall@1 %.4f vs "
            "%.4f for the base): do not promote it",
            after.recall.get(1, 0.0),
            before.recall.get(1, 0.0),
        )
    return report
