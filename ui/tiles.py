"""The result grid as HTML: one tile per product, readable at desktop and phone widths.

Each tile shows the photo (a button: "More like this"), the title (two lines, the full
title on hover), the price, the score, how many of the product's photos matched, and a
link to the product page (manifest column ``url``, opened in a new tab) when there is one.
Everything is escaped; images are inlined thumbnails or the catalog's own URLs.
"""

from __future__ import annotations

from html import escape
from typing import Any

from search import Match

from .images import Thumbnails

MISSING = (
    "data:image/svg+xml;utf8,<svg xmlns='http://www.w3.org/2000/svg' width='96' height='96'>"
    "<rect width='96' height='96' fill='%23e1e1e1'/></svg>"
)
LINK_KEYS = ("url", "product_url", "link")

# Scoped to the results component (gr.HTML css_template). The grid grows with its content
# (no inner scroll); columns follow the width (about 2 on a phone, 4 on a desktop).
CSS = """
.tiles { display: grid; grid-template-columns: repeat(auto-fill, minmax(140px, 1fr));
  gap: 10px; overflow: visible; }
.tile { display: flex; flex-direction: column; gap: 4px; border: 1px solid #ddd;
  border-radius: 8px; padding: 6px; background: var(--background-fill-primary, #fff); }
.tile.far { opacity: 0.75; border-style: dashed; }
.tile-pick { all: unset; cursor: pointer; display: block; aspect-ratio: 1 / 1;
  background: #f4f4f4; border-radius: 6px; overflow: hidden; }
.tile-pick:focus-visible { outline: 2px solid #2563eb; }
.tile-pick img { width: 100%; height: 100%; object-fit: contain; display: block; }
.tile-title { font-weight: 600; font-size: 0.95rem; line-height: 1.25; overflow: hidden;
  display: -webkit-box; -webkit-line-clamp: 2; -webkit-box-orient: vertical;
  overflow-wrap: anywhere; }
.tile-meta { display: flex; flex-wrap: wrap; justify-content: space-between; gap: 2px 8px;
  font-size: 0.9rem; }
.tile-price { font-weight: 600; }
.tile-score, .tile-count { color: #555; font-size: 0.85rem; }
.tile-link { font-size: 0.9rem; }
"""


def _price(meta: dict[str, Any]) -> str:
    price = meta.get("price")
    if isinstance(price, int | float) and not isinstance(price, bool):
        return f"{price:.2f}"
    return ""


def _link(meta: dict[str, Any]) -> str:
    for key in LINK_KEYS:
        value = meta.get(key)
        if isinstance(value, str) and value.startswith(("http://", "https://")):
            return value
    return ""


def title_of(match: Match) -> str:
    return str((match.metadata or {}).get("title") or match.id)


def tile(index: int, match: Match, src: str | None, floor: float) -> str:
    meta = match.metadata or {}
    title = escape(title_of(match))
    price = _price(meta)
    photos = int(getattr(match, "photos", 1) or 1)
    far = " far" if match.score < floor else ""
    parts = [
        f'<div class="tile{far}" data-index="{index}" data-id="{escape(match.id)}">',
        f'<button class="tile-pick" data-index="{index}" title="More like this: {title}">'
        f'<img src="{escape(src or MISSING)}" alt="{title}" loading="lazy"></button>',
        f'<div class="tile-title" title="{title}">{title}</div>',
        '<div class="tile-meta">',
        f'<span class="tile-price">{escape(price)}</span>' if price else "",
        f'<span class="tile-score" title="similarity">score {match.score:.3f}</span>',
        "</div>",
    ]
    if photos > 1:
        parts.append(f'<div class="tile-count">{photos} photos matched</div>')
    if src is None:
        parts.append('<div class="tile-count">image unavailable</div>')
    link = _link(meta)
    if link:
        parts.append(
            f'<a class="tile-link" href="{escape(link)}" target="_blank" '
            'rel="noopener noreferrer">View product ↗</a>'
        )
    parts.append("</div>")
    return "".join(parts)


def grid(matches: list[Match], thumbs: Thumbnails, floor: float = 0.0) -> str:
    """The HTML of the result grid (empty string when there is nothing to show)."""
    if not matches:
        return ""
    tiles = [tile(i, m, thumbs.src(m), floor) for i, m in enumerate(matches)]
    return f'<div class="tiles">{"".join(tiles)}</div>'


# Clicking a tile's photo asks for "More like this" (a `select` event with the tile's
# index); the focus leaves the tile so nothing stays highlighted once the page changes.
JS_ON_LOAD = """
element.addEventListener('click', (ev) => {
  const pick = ev.target.closest('.tile-pick');
  if (!pick) return;
  ev.preventDefault();
  pick.blur();
  const index = parseInt(pick.dataset.index, 10);
  trigger('select', {index: index, value: pick.closest('.tile').dataset.id, selected: true});
});
"""
