"""Per-session query state of the shop page: what was asked, which page, what is shown."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from search import Match

ANY = "Any"


@dataclass
class QueryState:
    """The current query (photo, catalog id or text), its filters and the results so far."""

    kind: str  # "image" | "id" | "text"
    value: Any
    filters: dict[str, Any] | None
    limit: int
    offset: int = 0
    matches: list[Match] = field(default_factory=list)
    exhausted: bool = False

    def next_page(self) -> QueryState:
        return dataclasses.replace(self, offset=self.offset + self.limit)

    def heading_for_more(self) -> str:
        if self.kind == "id":
            return "More like the product you picked"
        if self.kind == "text":
            return f"Products matching “{str(self.value)[:80]}”"
        return "Products similar to your photo"


def _finite(x: float | None) -> float | None:
    if x is None:
        return None
    try:
        value = float(x)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def build_filters(
    category: str | None, lo: float | None, hi: float | None, price_key: str = "price"
) -> dict[str, Any] | None:
    """Filters from the page's controls (category dropdown, price range)."""
    out: dict[str, Any] = {}
    if category and category != ANY:
        out["category"] = category
    bounds = {}
    lo, hi = _finite(lo), _finite(hi)
    if lo is not None:
        bounds["gte"] = lo
    if hi is not None:
        bounds["lte"] = hi
    if bounds:
        out[price_key] = bounds
    return out or None
