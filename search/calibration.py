"""A similarity floor derived from the catalog itself ("no close match" on the shop page).

Cosine scores mean different things for different models and catalogs, so a fixed floor is
either too strict or lets unrelated items fill the page. :func:`calibrate` measures it:

1. sample up to ``samples`` catalog photos;
2. turn each into a *shopper-style photo* (:func:`shopper_view`: an off-centre crop, a small
   tilt, other light, blur and JPEG re-compression: what a phone photo of the product
   looks like next to the catalog shot);
3. search it like a shopper would (the searcher's query crops, grouped by product). When
   the product has other photos, the sampled photo itself is left out (a held-out view);
4. the *matching* score is the best score of the right product, the *non-matching* score
   the best score of any other product (what a shopper whose product is not in the
   catalog would see at the top of the page);
5. the floor is the threshold that best separates the two (Youden's J: most matching
   queries above it, fewest non-matching ones).

The result is stored on the physical collection (a property, JSON), so it follows the
collection through a blue-green promotion and is measured again for a new version.
"""

from __future__ import annotations

import io
import json
import logging
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from .errors import ImageError, VSearchError
from .images import open_image
from .searcher import Searcher, group_key
from .types import Match

log = logging.getLogger(__name__)

CALIBRATION_KEY = "vsearch.calibration"
GROUP_KEYS = ("product", "group")
METHOD = "youden-j over shopper-style views (search.calibration)"


@dataclass(frozen=True)
class Calibration:
    """The floor and the score distributions it was derived from (quantiles 5..95 %)."""

    floor: float
    samples: int
    matching: tuple[float, ...]  # p5, p25, p50, p75, p95 of the right product's score
    nonmatching: tuple[float, ...]  # same quantiles of the best other product's score
    true_positive_rate: float  # matching queries at or above the floor
    false_positive_rate: float  # non-matching queries at or above the floor
    method: str = METHOD

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str) -> Calibration:
        data = json.loads(raw)
        data["matching"] = tuple(data["matching"])
        data["nonmatching"] = tuple(data["nonmatching"])
        return cls(**data)


def shopper_view(img: Image.Image, rng: random.Random) -> Image.Image:
    """A phone-photo-like view of a catalog image (crop, tilt, light, blur, JPEG)."""
    img = img.convert("RGB")
    w, h = img.size
    keep = rng.uniform(0.7, 0.92)
    cw, ch = int(w * keep), int(h * keep)
    x0, y0 = rng.randint(0, w - cw), rng.randint(0, h - ch)
    view = img.crop((x0, y0, x0 + cw, y0 + ch))
    view = view.rotate(rng.uniform(-8, 8), resample=Image.Resampling.BILINEAR, fillcolor="white")
    view = ImageEnhance.Brightness(view).enhance(rng.uniform(0.75, 1.25))
    view = ImageEnhance.Color(view).enhance(rng.uniform(0.7, 1.2))
    view = view.filter(ImageFilter.GaussianBlur(rng.uniform(0.0, 1.2)))
    buf = io.BytesIO()
    view.save(buf, "JPEG", quality=rng.randint(55, 85))
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def youden_floor(
    matching: Sequence[float], nonmatching: Sequence[float]
) -> tuple[float, float, float]:
    """The threshold maximising TPR - FPR (ties: the lowest), with its TPR and FPR."""
    pos, neg = np.asarray(matching, float), np.asarray(nonmatching, float)
    best = (-2.0, 0.0, 0.0, 0.0)
    for t in sorted(set(pos.tolist()) | set(neg.tolist())):
        tpr = float((pos >= t).mean()) if pos.size else 0.0
        fpr = float((neg >= t).mean()) if neg.size else 0.0
        if tpr - fpr > best[0] + 1e-12:
            best = (tpr - fpr, t, tpr, fpr)
    _, t, tpr, fpr = best
    # the midpoint between the threshold and the highest score below it: a query scoring
    # just under the lowest accepted match is not refused by a hair
    below = [s for s in np.concatenate([pos, neg]).tolist() if s < t]
    floor = (t + max(below)) / 2 if below else t
    return round(float(floor), 4), tpr, fpr


def _quantiles(values: Sequence[float]) -> tuple[float, ...]:
    if not values:
        return ()
    return tuple(round(float(q), 4) for q in np.quantile(values, [0.05, 0.25, 0.5, 0.75, 0.95]))


def calibrate(
    searcher: Searcher,
    *,
    samples: int = 48,
    seed: int = 0,
    group_by: str | Sequence[str] = GROUP_KEYS,
) -> Calibration:
    """Measure the floor of the live collection (see the module doc); nothing is stored."""
    physical = searcher.info().name
    store = searcher.store
    ids = sorted(store.fingerprints(physical))
    rng = random.Random(seed)
    picked = rng.sample(ids, min(samples, len(ids)))
    rows = store.get(physical, picked)
    matching, nonmatching = [], []
    for row in rows:
        match = _as_match(row)
        try:
            photo = shopper_view(open_image(row["image"], draft_size=512), rng)
        except (ImageError, OSError) as exc:
            log.info("calibration skips %s: %s", match.id, exc)
            continue
        own = group_key(match, group_by)
        hits = searcher.similar(photo, limit=50, min_score=0.0)
        same = [h for h in hits if group_key(h, group_by) == own]
        held_out = [h for h in same if h.id != match.id]  # the product's other photos
        right = held_out or same
        other = [h.score for h in hits if group_key(h, group_by) != own]
        if right:
            matching.append(right[0].score)
        if other:
            nonmatching.append(other[0])
    if not matching or not nonmatching:
        raise VSearchError("too few catalog photos to calibrate a similarity floor")
    floor, tpr, fpr = youden_floor(matching, nonmatching)
    cal = Calibration(floor, len(matching), _quantiles(matching), _quantiles(nonmatching), tpr, fpr)
    log.info("calibrated floor %.3f (TPR %.2f, FPR %.2f, %d queries)", floor, tpr, fpr, len(rows))
    return cal


def _as_match(row: dict[str, Any]) -> Match:
    return Match(str(row["id"]), 1.0, row.get("image", ""), row.get("metadata") or {})


def stored(searcher: Searcher) -> Calibration | None:
    """The calibration stored on the live collection, if any (None when unreadable)."""
    physical = searcher.info().name
    raw = searcher.store.properties(physical).get(CALIBRATION_KEY)
    if not raw:
        return None
    try:
        return Calibration.from_json(raw)
    except (ValueError, TypeError, KeyError) as exc:
        log.warning("ignoring an unreadable calibration on %s: %s", physical, exc)
        return None


def save(searcher: Searcher, calibration: Calibration) -> None:
    """Store ``calibration`` on the live (physical) collection."""
    physical = searcher.info().name
    searcher.store.set_properties(physical, {CALIBRATION_KEY: calibration.to_json()})
