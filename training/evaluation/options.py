"""Evaluation options: what ``vsearch eval`` asks, shared by the label and instance tasks.

Each field is declared once with its help text; :func:`cli.flags.build` turns the parsed
flags of ``vsearch eval`` into an :class:`EvalOptions` by field name.
"""

from __future__ import annotations

from dataclasses import dataclass

from search.options import option

from .retrieval import DEFAULT_KS


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
    views: int = option(8, "instance: shopper photos per held-out item")
    backgrounds: str | None = option(
        None, "instance: your background photos (judging pool)", metavar="DIR"
    )
    id_column: str | None = option(None, "manifest id column")
    image_column: str | None = option(None, "manifest image column")
    ks: tuple[int, ...] = option(DEFAULT_KS, "label: recall@k for each k", flag=False)
