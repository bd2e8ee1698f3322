"""Per-session query state of the shop page: what was asked, which page, what is shown."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from search import Match

ANY = "Any"


class FilterError(ValueError):
    """The filter controls contradict each other (a message for the shopper)."""


@dataclass
class QueryState:
    """The current query (photo, catalog id or text), its filters and the page shown.

    photo: the shopper's (reduced) photo, kept for the crop tool and for "back to your
        photo's results" after browsing with "More like this".
    title: the picked product's title for a "More like this" query.
    """

    kind: str  # "image" | "id" | "text"
    value: Any
    filters: dict[str, Any] | None
    limit: int
    offset: int = 0
    matches: list[Match] = field(default_factory=list)
    exhausted: bool = False
    photo: Any = None
    title: str = ""
    region: str = ""  # "cropped region" for a crop query

    def next_page(self) -> QueryState:
        return dataclasses.replace(self, offset=self.offset + self.limit, matches=[])

    def heading(self) -> str:
        if self.kind == "id":
            return f"More like “{self.title[:80]}”"
        if self.kind == "text":
            return f"Products matching “{str(self.value)[:80]}”"
        if self.region:
            return "Products similar to the cropped region"
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
    """Filters from the page's controls (category dropdown, price range).

    Raises FilterError when the minimum price is above the maximum.
    """
    out: dict[str, Any] = {}
    if category and category != ANY:
        out["category"] = category
    bounds = {}
    lo, hi = _finite(lo), _finite(hi)
    if lo is not None and hi is not None and lo > hi:
        raise FilterError(
            f"The minimum price ({lo:g}) is above the maximum price ({hi:g}): "
            "lower the minimum or raise the maximum."
        )
    if lo is not None:
        bounds["gte"] = lo
    if hi is not None:
        bounds["lte"] = hi
    if bounds:
        out[price_key] = bounds
    return out or None


def parse_box(raw: str | None) -> tuple[float, float, float, float] | None:
    """A crop box "x0,y0,x1,y1" in 0..1 image fractions; None when absent or degenerate."""
    if not raw:
        return None
    try:
        x0, y0, x1, y1 = (min(1.0, max(0.0, float(v))) for v in str(raw).split(","))
    except ValueError:
        return None
    x0, x1 = sorted((x0, x1))
    y0, y1 = sorted((y0, y1))
    if x1 - x0 < 0.02 or y1 - y0 < 0.02:
        return None
    return x0, y0, x1, y1
