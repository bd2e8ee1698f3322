"""Evaluation options: what ``vsearch eval`` asks, shared by the label and instance tasks.

Each field is declared once with its help text; :func:`cli.flags.build` turns the parsed
flags of ``vsearch eval`` into an :class:`EvalOptions` by field name.
"""

from __future__ import annotations

from dataclasses import dataclass

from search.options import option

from .retrieval import DEFAULT_KS

# Simulated shopper photos per held-out item when an instance model is judged: the default of
# `vsearch eval --views` and of the finetune verdict (`--eval-views`), so both judge alike.
# 8 rather than 4: the same 50 held-out items gave the default adaptation p = 0.0013
# instead of 0.025 (docs/transfer-learning.md).
JUDGING_VIEWS = 8


@dataclass(frozen=True)
class EvalOptions:
    """How models are evaluated on a catalog (the same questions for every model)."""

    label_column: str | None = option(
        None,
        "manifest column saying which items match (default: product, else category, else "
        "the item's folder); the instance task's product groups",
    )
    holdout: float = option(0.2, "fraction of items used as queries")
    seed: int = option(0, "seed of the held-out split")
    views: int = option(JUDGING_VIEWS, "instance: shopper photos per held-out item")
    backgrounds: str | None = option(
        None, "instance: your background photos (judging pool)", metavar="DIR"
    )
    id_column: str | None = option(None, "manifest id column")
    image_column: str | None = option(None, "manifest image column")
    ks: tuple[int, ...] = option(DEFAULT_KS, "label: recall@k for each k", flag=False)
