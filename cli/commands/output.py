"""Shared output helpers for commands: JSON to stdout, result tables, progress."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from search.types import Match

log = logging.getLogger("vsearch")


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, ensure_ascii=False, default=str)
    sys.stdout.write("\n")


def print_matches(matches: Sequence[Match]) -> None:
    """One line per match (rank, score, id, title, category/brand, price), then its image.

    The image path (or URL) goes on its own indented line, so a user can open it straight
    away and a long path never pushes the title out of sight.
    """
    if not matches:
        print("no matches")
        return
    for rank, m in enumerate(matches, 1):
        meta = m.metadata
        title = meta.get("title") or m.id
        extra = ", ".join(str(meta[k]) for k in ("category", "brand") if meta.get(k))
        price = f"  {meta['price']:.2f}" if isinstance(meta.get("price"), int | float) else ""
        print(
            f"{rank:3d}. {m.score:.4f}  {m.id}  {title}" + (f"  [{extra}]" if extra else "") + price
        )
        if m.image:
            print(f"     {m.image}")


def progress_reporter(
    enabled: bool, desc: str
) -> tuple[Callable[[int, int], None] | None, Callable[[], None]]:
    """A tqdm bar on a terminal, plain log lines otherwise; returns (callback, close)."""
    if not enabled:
        return None, lambda: None
    if sys.stderr.isatty():
        from tqdm import tqdm

        bar: Any = None

        def update(done: int, total: int) -> None:
            nonlocal bar
            if bar is None:
                bar = tqdm(total=total, desc=desc, unit="img", file=sys.stderr)
            bar.update(done - bar.n)

        return update, lambda: bar.close() if bar is not None else None

    state = {"next": 0.0}

    def log_line(done: int, total: int) -> None:
        if done >= total or done / max(total, 1) >= state["next"]:
            log.info("%s: %d/%d images", desc, done, total)
            state["next"] = done / max(total, 1) + 0.1

    return log_line, lambda: None
