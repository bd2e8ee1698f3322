"""The "find this product" task: simulated shopper photos of held-out items search the catalog.

Held-out items (a hash of their id; the same ones ``vsearch finetune`` never trains on
with the same ``--seed`` and ``--holdout``) get ``views`` shopper photos each from the
judging family (other backgrounds and ranges than training uses). Each searches every
catalog photo; the right answer is the item itself (or any photo of its product group).
Reported per model: recall@1/5/10, MRR@10 and category top-1 with 95% bootstrap
intervals over items, and the verdict of each model against the first on the same views.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from indexer.catalog import load_catalog
from indexer.tuning import Tuning
from search.config import Settings
from search.errors import CatalogError, ConfigError
from search.model_folder import finetune_block

from .backgrounds import load_backgrounds
from .features import Feed
from .labels import holdout_mask
from .options import EvalOptions
from .report import format_rows
from .scores import Queries, QueryScores, Verdict, judge, score
from .views import ViewJob, ViewSet, cache_views

log = logging.getLogger(__name__)
Progress = Callable[[str, int, int], None]
Embed = Callable[[Any], np.ndarray]


class JudgeSet(Protocol):
    clean: ViewSet
    eval_views: ViewSet
    groups: np.ndarray
    categories: list[str] | None


@dataclass
class _Set:
    clean: ViewSet
    eval_views: ViewSet
    groups: np.ndarray
    categories: list[str] | None


def query_scores(
    embed: Embed, data: JudgeSet, items: np.ndarray, gallery: np.ndarray | None = None
) -> QueryScores:
    """Every judging view of ``items`` searches the whole catalog (its clean photos).

    ``gallery``: the catalog's embeddings (rows of ``data.clean.ok`` items), when the
    caller already has them (several question sets asked of one model).
    """
    ok = data.clean.ok
    gallery_rows = np.nonzero(ok)[0]
    if gallery is None:
        gallery = embed(data.clean.maps[gallery_rows, 0])
    items = items[data.eval_views.ok[items] & ok[items]]
    if items.size == 0:
        empty = np.zeros(0)
        return QueryScores(empty.astype(np.int64), empty, None)
    v = data.eval_views.per_item
    maps = data.eval_views.maps[items].flatten(0, 1)
    q_items = np.repeat(items, v)
    row_of = {int(i): n for n, i in enumerate(gallery_rows)}
    # the right answers: the item itself, and any other photo of its product group
    relevant = [
        np.array([row_of[int(j)] for j in np.nonzero((data.groups == data.groups[i]) & ok)[0]])
        for i in q_items
    ]
    cats = data.categories
    asked = Queries(
        embed(maps), relevant, q_items, categories=[cats[i] for i in q_items] if cats else None
    )
    return score(gallery, asked, categories=[cats[i] for i in gallery_rows] if cats else None)


@dataclass
class InstanceModelEval:
    model: str
    scores: QueryScores
    verdict: Verdict | None = None  # against the first model
    trained_on_all: bool = False
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            **self.scores.to_dict(),
            "verdict_vs_first": self.verdict.to_dict() if self.verdict else None,
            "trained_on_held_out_items": self.trained_on_all,
            "seconds": round(self.seconds, 2),
        }


@dataclass
class InstanceEvalReport:
    catalog: str
    items: int
    held_out: int
    views: int
    holdout: float
    seed: int
    backgrounds: str
    models: list[InstanceModelEval] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": "instance",
            "catalog": self.catalog,
            "items": self.items,
            "held_out": self.held_out,
            "views_per_item": self.views,
            "holdout": self.holdout,
            "seed": self.seed,
            "backgrounds": self.backgrounds,
            "models": [m.to_dict() for m in self.models],
        }

    def table(self) -> str:
        names = self.models[0].scores.names() if self.models else []
        rows = [
            [m.model + (" *" if m.trained_on_all else ""), str(m.scores.rank.size)]
            + m.scores.cells(names)
            for m in self.models
        ]
        lines = format_rows(["find this product", "queries", *names], rows)
        lines.append(
            f"{self.held_out} held-out items of {self.items}, {self.views} simulated shopper "
            f"photos each (95% intervals by item)"
        )
        for m in self.models[1:]:
            if m.verdict:
                word = "better" if m.verdict.improved else "not better"
                lines.append(f"{m.model}: {word} than {self.models[0].model}: {m.verdict.reason}")
        if any(m.trained_on_all for m in self.models):
            lines.append(
                "* trained on every item of its catalog (refit): these held-out figures are "
                "in-sample; its finetune report's verdict is the honest one"
            )
        return "\n".join(lines)


def evaluate_instance(
    source: str | Path,
    settings: Settings,
    models: Sequence[str] = (),
    options: EvalOptions | None = None,
    *,
    progress: Progress | None = None,
) -> InstanceEvalReport:
    """Evaluate each model (default: ``settings.model.model``) on "find this product".

    ``options.label_column`` names the product groups (items of a group answer each other).
    """
    from .run import load_embedder

    o = options or EvalOptions()
    holdout, seed, views = o.holdout, o.seed, o.views
    items = load_catalog(
        source,
        id_column=o.id_column,
        image_column=o.image_column,
        numeric_columns=(),
        allowed_roots=settings.indexing.allowed_roots,
    ).items
    if not items:
        raise CatalogError(f"catalog {source} has no usable images")
    ids = [i.id for i in items]
    test = np.nonzero(holdout_mask(ids, holdout, seed))[0]
    if test.size == 0:
        raise ConfigError(f"no item is held out with --holdout {holdout}: nothing to ask")
    pools = load_backgrounds(o.backgrounds, seed)
    cats = [str(i.metadata.get("category", "")) for i in items]
    groups = group_ids(items, o.label_column)
    report = InstanceEvalReport(
        str(source), len(items), int(test.size), views, holdout, seed, pools.source
    )
    for spec in models or [settings.model.model]:
        t0 = time.perf_counter()
        embedder = load_embedder(spec, settings)
        step = (lambda d, t, s=spec: progress(s, d, t)) if progress else None
        job = ViewJob(
            [i.image for i in items],
            ids,
            {"clean": (range(len(items)), 1), "eval": (test, views)},
            backgrounds={"eval": pools.eval},
            seed=seed,
            max_pixels=settings.indexing.max_image_pixels,
            allow_private=settings.indexing.allow_private_urls,
            dtype=torch.float32,
        )
        sets, failed = cache_views(
            job,
            lambda pixels, e=embedder: torch.from_numpy(e.embed_tensors(pixels)),
            Feed.of(embedder),
            Tuning(
                batch_size=settings.indexing.batch_size or 8,
                workers=max(0, settings.indexing.workers),
                threads=0,
            ),
            step,
        )
        for item_id, reason in failed:
            log.warning("skipped %s: %s", item_id, reason)
        data = _Set(sets["clean"], sets["eval"], groups, cats if any(cats) else None)
        scores = query_scores(lambda m: m.numpy(), data, test)
        first = report.models[0].scores if report.models else None
        report.models.append(
            InstanceModelEval(
                spec,
                scores,
                judge(scores, first, seed=seed) if first is not None else None,
                _trained_on_all(embedder.info.name),
                time.perf_counter() - t0,
            )
        )
    return report


def group_ids(items: Sequence[Any], column: str | None) -> np.ndarray:
    """Product group per item: the ``column`` value (e.g. a SKU group), else the item."""
    if not column or column == "id":
        return np.arange(len(items))
    table: dict[str, int] = {}
    out = np.empty(len(items), np.int64)
    for n, item in enumerate(items):
        value = item.metadata.get(column)
        key = f"value:{value}" if value not in (None, "") else f"item:{item.id}"
        out[n] = table.setdefault(key, len(table))
    return out


def _trained_on_all(model_name: str) -> bool:
    block = finetune_block(model_name) or {}
    return bool(block.get("options", {}).get("refit")) and block.get("objective") == "instance"
