"""Query photos seen at several framings: the whole photo and overlapping crops of it.

A shopper's photo shows the product somewhere in a scene: off-centre, small, with a table,
a hand or a shelf around it. Each crop is embedded and searched, and every catalog item
keeps its best score over the crops (max fusion): the crop that frames the product best
decides. On a 240-product catalog with phone-style photos (benchmarks/shopper_catalog.py)
"find this product" recall@1 of the built-in model went from 0.61 (the whole photo) to 0.76
("five": the whole photo, its centre and four corners at 0.7 of the side) and 0.83
("nine", the default: the whole photo and a 3 x 3 grid at 0.6), with no training.
A catalog photo used as a query still finds itself first (its whole-photo view scores 1.0).
The cost is one forward pass per view: a photo search took 21 ms (none), 79 ms (five) and
129 ms (nine) at p50 on a 2-core CPU with 240 items in Milvus Lite, in PyTorch; with
OpenVINO, embedding the ten views of a phone photo as the clients send it takes ~65 ms
there (docs/benchmarks.md, "A query's pictures resized on two threads").
"""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image

# (side as a share of the photo's side, horizontal position, vertical position), 0..1
SCHEMES: dict[str, tuple[tuple[float, float, float], ...]] = {
    "none": ((1.0, 0.5, 0.5),),
    "five": (
        (1.0, 0.5, 0.5),
        (0.7, 0.5, 0.5),
        (0.7, 0.0, 0.0),
        (0.7, 1.0, 0.0),
        (0.7, 0.0, 1.0),
        (0.7, 1.0, 1.0),
    ),
    # the whole photo and a 3 x 3 grid of crops of 0.6 of its side (overlapping by 0.4)
    "nine": ((1.0, 0.5, 0.5),)
    + tuple((0.6, x, y) for y in (0.0, 0.5, 1.0) for x in (0.0, 0.5, 1.0)),
}


def crops(img: Image.Image, scheme: str) -> list[Image.Image]:
    """The views of ``img`` that ``scheme`` names (the whole photo first)."""
    w, h = img.size
    out = []
    for side, px, py in SCHEMES[scheme]:
        cw, ch = max(1, round(w * side)), max(1, round(h * side))
        x0, y0 = round((w - cw) * px), round((h - ch) * py)
        out.append(img if side == 1.0 else img.crop((x0, y0, x0 + cw, y0 + ch)))
    return out


def fuse(
    per_view: Sequence[Sequence[tuple[str, float, object]]],
) -> list[tuple[str, float, object]]:
    """Merge per-view hit lists (id, score, payload): each id keeps its best, best first."""
    best: dict[str, tuple[str, float, object]] = {}
    for hits in per_view:
        for hit in hits:
            if hit[0] not in best or hit[1] > best[hit[0]][1]:
                best[hit[0]] = hit
    return sorted(best.values(), key=lambda h: -h[1])
