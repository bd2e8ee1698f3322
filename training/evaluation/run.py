"""``evaluate``: retrieval quality of one or more models on a labelled catalog.

Each model embeds the catalog (cached per model and image), the seeded held-out queries
search every other item exactly, and recall@k / mAP@k are computed. Optionally the live
collection's approximate index is compared with exact search over its stored vectors.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from search.config import Settings
from search.embedder import Embedder
from search.model_folder import split_model_spec

from .ann import AnnResult, ann_vs_exact
from .features import extract, extractor_for
from .labels import LabelledCatalog, holdout_mask, load_labelled
from .report import EvalReport, ModelEval
from .retrieval import DEFAULT_KS, retrieval_metrics

log = logging.getLogger(__name__)
Progress = Callable[[str, int, int], None]


parse_model = split_model_spec  # "builtin:X", "local-dir:PATH", "hf-hub:R", "NAME:TAG", "NAME"


def load_embedder(spec: str, settings: Settings) -> Embedder:
    name, pretrained = parse_model(spec, settings.pretrained)
    return Embedder.from_settings(settings, name, pretrained)


def evaluate_model(
    catalog: LabelledCatalog,
    embedder: Embedder,
    settings: Settings,
    queries: np.ndarray,
    *,
    ks: Sequence[int] = DEFAULT_KS,
    label: str = "",
    progress: Callable[[int, int], None] | None = None,
) -> ModelEval:
    """Embed ``catalog`` with ``embedder`` and score the ``queries`` mask against it."""
    t0 = time.perf_counter()
    extractor = extractor_for(embedder)
    feats = extract(catalog.items, extractor, settings, progress=progress)
    vectors = extractor.finish(feats.vectors)
    result = retrieval_metrics(
        vectors, catalog.labels, queries & feats.ok, ks=ks, gallery_mask=feats.ok
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
    *,
    label_column: str | None = None,
    holdout: float = 0.2,
    seed: int = 0,
    ks: Sequence[int] = DEFAULT_KS,
    id_column: str | None = None,
    image_column: str | None = None,
    progress: Progress | None = None,
) -> EvalReport:
    """Evaluate each model (default: ``settings.model``) on the catalog at ``source``."""
    catalog = load_labelled(
        source,
        label_column,
        id_column=id_column,
        image_column=image_column,
        allowed_roots=settings.allowed_roots,
    )
    queries = holdout_mask(catalog.ids, holdout, seed)
    report = EvalReport(
        catalog=str(source),
        label_column=catalog.label_column,
        items=len(catalog),
        labels=len(set(catalog.labels)),
        holdout=holdout,
        seed=seed,
    )
    for spec in models or [settings.model]:
        embedder = load_embedder(spec, settings)
        step = (lambda d, t, s=spec: progress(s, d, t)) if progress else None
        report.models.append(
            evaluate_model(catalog, embedder, settings, queries, ks=ks, label=spec, progress=step)
        )
    return report


def evaluate_index(
    settings: Settings, *, k: int = 10, queries: int = 200, seed: int = 0
) -> AnnResult:
    """ANN-vs-exact recall of the live collection named by ``settings.collection``."""
    from search.store import MilvusStore

    store = MilvusStore(settings)
    try:
        return ann_vs_exact(store, settings.collection, k=k, queries=queries, seed=seed)
    finally:
        store.close()
