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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from indexer.catalog import CatalogItem, load_catalog
from search.config import Settings
from search.embedder import Embedder
from search.errors import CatalogError

from ..evaluation.features import Feed, TrunkFeatures, extract
from ..evaluation.labels import LabelledCatalog, choose_task, load_labelled
from ..evaluation.report import format_rows, json_safe
from ..evaluation.retrieval import RetrievalResult
from ..evaluation.scores import QueryScores, Verdict
from .adapt import finetune_instance
from .augment import product_augment
from .data import Split, TrainingSet, add_training_items, make_split
from .export import Export, export_model, prepare_output
from .label_verdict import check_answerable, judge_labels
from .model import base_model_cfg, build_model, configure_trainable, new_model_cfg
from .options import FinetuneOptions
from .train import (
    History,
    Listeners,
    ModelFeatures,
    Progress,
    Trainee,
    train_backbone,
    train_head,
    validate,
)

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
    verdict: Verdict | None = None
    held_out: dict[str, Any] = field(default_factory=dict)

    @property
    def improved(self) -> bool:
        """The verdict on held-out items (see :func:`training.evaluation.scores.judge`)."""
        return self.verdict is not None and self.verdict.improved

    def to_dict(self) -> dict[str, Any]:
        return json_safe(
            {
                "output": self.output,
                "model": f"local-dir:{self.output}",
                "base_model": self.base_model,
                "strategy": self.strategy,
                "improved": self.improved,
                "verdict": self.verdict.to_dict() if self.verdict else None,
                "held_out": self.held_out,
                "items": self.items,
                "before": self.before.to_dict(),
                "after": self.after.to_dict(),
                "history": self.history.to_dict(),
                "options": self.options,
                "seconds": round(self.seconds, 1),
            }
        )

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
    """The objective ``auto`` stands for (see :func:`choose_task`), and the catalog's items."""
    items = load_catalog(
        source,
        id_column=opts.id_column,
        image_column=opts.image_column,
        numeric_columns=(),
        allowed_roots=settings.indexing.allowed_roots,
    ).items
    if not items:
        raise CatalogError(f"catalog {source} has no usable images")
    if opts.objective != "auto":
        return opts.objective, items
    return choose_task(items, opts.label_column), items


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
    """Fine-tune ``settings.model.model`` on the catalog at ``source``; write it to ``output``."""
    opts = options or FinetuneOptions()
    started = time.perf_counter()
    out = prepare_output(output, overwrite)
    torch.manual_seed(opts.seed)
    np.random.seed(opts.seed)  # noqa: NPY002 - DataLoader workers derive from global seeds
    objective, items = resolve_objective(source, settings, opts)
    if objective == "instance":
        listeners = Listeners(progress, feature_progress)
        return finetune_instance(items, settings, out, opts.resolved("instance"), listeners)
    opts = opts.resolved("label")
    catalog = load_labelled(
        source,
        opts.label_column,
        id_column=opts.id_column,
        image_column=opts.image_column,
        allowed_roots=settings.indexing.allowed_roots,
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
            allowed_roots=settings.indexing.allowed_roots,
        )
        pool, split, dropped = add_training_items(pool, split, extra, catalog)
        log.info(
            "extra training catalog %s: %d items added, %d dropped (also in the catalog)",
            opts.extra_train,
            len(extra) - dropped,
            dropped,
        )
    check_answerable(catalog, pool, split)
    base = Embedder.from_settings(settings)
    base_cfg = base_model_cfg(base, settings.model.cache_dir)
    trunk = TrunkFeatures.of(base)
    feats = extract(pool.items, trunk, settings, progress=feature_progress)
    for item_id, reason in feats.failed:
        log.warning("skipped %s: %s", item_id, reason)
    data = TrainingSet(pool, split, feats.ok)
    before = validate(trunk.finish(feats.vectors), data)
    log.info("base %s: validation recall@1 %.4f", base.info.name, before.recall.get(1, 0.0))
    cfg = new_model_cfg(base_cfg, opts)
    model = build_model(cfg, base, opts.seed)
    visual = model.visual
    groups = configure_trainable(visual, opts)
    trainee = Trainee(visual, groups, opts, Feed.of(base), progress)
    if opts.strategy == "head":
        history = train_head(trainee, data, feats.vectors)
    else:
        augment = product_augment(base.info.image_size) if opts.augment else None
        history = train_backbone(trainee, data, settings, augment)
    after = history.best_result or before
    verdict, base_held, new_held = _judge(trainee, catalog, split, trunk, settings)
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
        verdict=verdict,
        held_out={"before": base_held.to_dict(), "after": new_held.to_dict()},
    )
    report.seconds = time.perf_counter() - started
    vsearch = {
        "base_model": base.info.to_dict(),
        "objective": "label",
        "strategy": opts.strategy,
        "improved": report.improved,
        "verdict": verdict.to_dict(),
        "metrics": {"before": before.to_dict(), "after": after.to_dict()},
        "options": opts.to_dict(),
    }
    export_model(Export(model, cfg, base.info.preprocess, vsearch, report.to_dict()), out)
    if not report.improved:
        log.warning("the fine-tuned model is NOT better than its base: %s", verdict.reason)
    return report


def _judge(
    trainee: Trainee,
    catalog: LabelledCatalog,
    split: Split,
    trunk: TrunkFeatures,
    settings: Settings,
) -> tuple[Verdict, QueryScores, QueryScores]:
    """Base vs adapted on the held-out items (never trained on, nor used to pick an epoch)."""
    feats = extract(catalog.items, trunk, settings)
    before = trunk.finish(feats.vectors)
    visual = trainee.visual
    if trainee.opts.strategy == "head":
        with torch.inference_mode():
            out = visual.head(torch.from_numpy(feats.vectors).to(trainee.feed.device)).float()
            after = torch.nn.functional.normalize(out, dim=-1).cpu().numpy()
    else:
        tuned = ModelFeatures(visual, trainee.feed)
        after = extract(catalog.items, tuned, settings, use_cache=False).vectors
    data = TrainingSet(catalog, split, feats.ok)
    return judge_labels(data, before, after, trainee.opts.seed)
