"""``evaluate``: retrieval quality of one or more models on a labelled catalog.

Each model embeds the catalog (cached per model and image), the seeded held-out queries
search every other item exactly, and recall@k / mAP@k are computed. Optionally the live
collection's approximate index is compared with exact search over its stored vectors.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from search.config import Settings
from search.embedder import Embedder
from search.model_folder import split_model_spec

from .ann import AnnResult, ann_vs_exact
from .features import extract, extractor_for
from .labels import LabelledCatalog, holdout_mask, load_labelled
from .options import EvalOptions
from .report import EvalReport, ModelEval
from .retrieval import Cutoffs, retrieval_metrics

log = logging.getLogger(__name__)
Progress = Callable[[str, int, int], None]


parse_model = split_model_spec  # "builtin:X", "local-dir:PATH", "hf-hub:R", "NAME:TAG", "NAME"


def load_embedder(spec: str, settings: Settings) -> Embedder:
    name, pretrained = parse_model(spec, settings.model.pretrained)
    return Embedder.from_settings(settings, name, pretrained)


@dataclass(frozen=True)
class Questions:
    """What every model is asked: the labelled catalog, its held-out queries (a mask over
    the catalog) and where the ranked lists are cut."""

    catalog: LabelledCatalog
    queries: np.ndarray
    cutoffs: Cutoffs = Cutoffs()


def evaluate_model(
    questions: Questions,
    embedder: Embedder,
    settings: Settings,
    *,
    label: str = "",
    progress: Callable[[int, int], None] | None = None,
) -> ModelEval:
    """Embed the catalog with ``embedder`` and score the held-out queries against it."""
    t0 = time.perf_counter()
    catalog = questions.catalog
    extractor = extractor_for(embedder)
    feats = extract(catalog.items, extractor, settings, progress=progress)
    vectors = extractor.finish(feats.vectors)
    result = retrieval_metrics(
        vectors,
        catalog.labels,
        questions.queries & feats.ok,
        gallery_mask=feats.ok,
        cutoffs=questions.cutoffs,
    )
    for item_id, reason in feats.failed:
        log.warning("skipped %s: %s", item_id, reason)
    return ModelEval(
        model=label or embedder.info.name,
        describe=embedder.info.describe(),
        dim=embedder.info.dim,
        result=result,
        failed=len(feats.failed),
        embedded=feats.computed,
        seconds=time.perf_counter() - t0,
    )


def evaluate(
    source: str | Path,
    settings: Settings,
    models: Sequence[str] = (),
    options: EvalOptions | None = None,
    *,
    progress: Progress | None = None,
) -> EvalReport:
    """Evaluate each model (default: ``settings.model.model``) on the catalog at ``source``."""
    o = options or EvalOptions()
    catalog = load_labelled(
        source,
        o.label_column,
        id_column=o.id_column,
        image_column=o.image_column,
        allowed_roots=settings.indexing.allowed_roots,
    )
    questions = Questions(
        catalog, holdout_mask(catalog.ids, o.holdout, o.seed), Cutoffs(tuple(o.ks))
    )
    report = EvalReport(
        catalog=str(source),
        label_column=catalog.label_column,
        items=len(catalog),
        labels=len(set(catalog.labels)),
        holdout=o.holdout,
        seed=o.seed,
    )
    for spec in models or [settings.model.model]:
        embedder = load_embedder(spec, settings)
        step = (lambda d, t, s=spec: progress(s, d, t)) if progress else None
        report.models.append(
            evaluate_model(questions, embedder, settings, label=spec, progress=step)
        )
    return report


def evaluate_index(
    settings: Settings, *, k: int = 10, queries: int = 200, seed: int = 0
) -> AnnResult:
    """ANN-vs-exact recall of the live collection named by ``settings.store.collection``."""
    from search.store import MilvusStore

    store = MilvusStore(settings)
    try:
        return ann_vs_exact(store, settings.store.collection, k=k, queries=queries, seed=seed)
    finally:
        store.close()
