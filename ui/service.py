"""What the shop UI and the HTTP API share: one searcher, its options, status and facets.

Everything here goes through the ``search`` package's public API (``Searcher`` and the
``MilvusStore`` it owns); the Gradio app and the FastAPI routes are thin shells over it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from search import ConfigError, Searcher, VSearchError
from search import calibration as calib
from search.options import option

log = logging.getLogger(__name__)

DEFAULT_MAX_UPLOAD = 10 * 1024 * 1024


def parse_auth(raw: str) -> tuple[str, str]:
    """``USER:PASSWORD`` (the password may hold colons)."""
    user, sep, password = raw.partition(":")
    if not sep or not user or not password:
        raise ConfigError("--auth / VSEARCH_AUTH must be USER:PASSWORD")
    return user, password


def megabytes(raw: str) -> int:
    """``"2.5"`` (MB) -> bytes."""
    try:
        return int(float(raw) * 1024 * 1024)
    except ValueError:
        raise ConfigError(f"{raw!r} is not a number of megabytes") from None


@dataclass(frozen=True)
class UiOptions:
    """Serving options (flags / env of ``vsearch serve``).

    min_score: the similarity floor under which a result is not shown (None: the
        setting's ``min_score`` for the API; the page uses the catalog's calibrated floor,
        see :mod:`search.calibration`); max_upload_bytes: the largest query photo accepted.
    concurrency: how many page searches run at once (Gradio's default_concurrency_limit;
        more wait in Gradio's queue). group_by: metadata keys that group photos of one
        product into one tile (the first key present wins). calibrate: measure and store
        the floor at start-up when the collection has none.
    """

    host: str = option("127.0.0.1", "interface to bind (default 127.0.0.1)")
    port: int = option(7860, "port (default 7860)")
    auth: tuple[str, str] | None = option(
        None,
        "require this login for the page and the API",
        metavar="USER:PASSWORD",
        parse=parse_auth,
    )
    max_upload_bytes: int = option(
        DEFAULT_MAX_UPLOAD,
        "largest query photo accepted, in MB (default 10)",
        name="max_upload_mb",
        metavar="MB",
        parse=megabytes,
    )
    min_score: float | None = option(
        None,
        "similarity floor: results below it are not shown (default: the page uses the "
        "catalog's calibrated floor)",
    )
    page_size: int = option(12, "results per page shown by default (default 12)")
    max_page_size: int = 100
    title: str = option("Visual product search", "page title")
    thumb_px: int = 384
    facet_keys: tuple[str, ...] = ("category",)
    range_key: str = "price"
    concurrency: int = option(4, "page searches run at once; more wait in the queue (default 4)")
    group_by: tuple[str, ...] = ("product", "group")
    calibrate: bool = True
    upload_grace_s: float = 30.0  # shoppers' uploads are deleted this long after being read

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ConfigError(f"port {self.port} is out of range")
        if self.max_upload_bytes <= 0:
            raise ConfigError("--max-upload-mb must be positive")
        if not 1 <= self.page_size <= self.max_page_size:
            raise ConfigError(f"--page-size must be between 1 and {self.max_page_size}")
        if not 1 <= self.concurrency <= 64:
            raise ConfigError("--concurrency must be between 1 and 64")


@dataclass(frozen=True)
class Status:
    """What the page's status line says; ``error`` is set when the catalog cannot be used."""

    collection: str
    physical: str = ""
    model: str = ""
    count: int = 0
    has_text: bool = False
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": "ok" if self.ok else "unavailable",
            "collection": self.collection,
            "physical": self.physical,
            "model": self.model,
            "count": self.count,
            "has_text": self.has_text,
            "error": self.error,
        }


@dataclass(frozen=True)
class Facets:
    """Filter choices taken from the collection's metadata."""

    values: dict[str, list[Any]] = field(default_factory=dict)
    range: tuple[float, float] | None = None


class CatalogService:
    """The searcher plus the small extras a shop front needs (status, facets, warm-up)."""

    def __init__(self, searcher: Searcher, options: UiOptions | None = None) -> None:
        self.searcher = searcher
        self.options = options or UiOptions()
        self._calibration: tuple[str, calib.Calibration | None] | None = None

    @property
    def collection(self) -> str:
        return self.searcher.settings.store.collection

    @property
    def min_score(self) -> float:
        floor = self.options.min_score
        return self.searcher.settings.search.min_score if floor is None else floor

    def calibration(self) -> calib.Calibration | None:
        """The live collection's stored calibration (read once per physical collection)."""
        try:
            physical = self.searcher.info().name
            if self._calibration is None or self._calibration[0] != physical:
                self._calibration = (physical, calib.stored(self.searcher))
        except VSearchError as exc:
            log.info("no calibration: %s", exc)
            return None
        return self._calibration[1]

    def calibrate(self, samples: int = 48) -> calib.Calibration | None:
        """Measure the floor of the live collection and store it with the collection."""
        try:
            cal = calib.calibrate(self.searcher, samples=samples, group_by=self.options.group_by)
            calib.save(self.searcher, cal)
            self._calibration = (self.searcher.info().name, cal)
        except VSearchError as exc:
            log.warning("similarity floor not calibrated: %s", exc)
            return None
        return cal

    def _wants_calibration(self) -> bool:
        opts = self.options
        if not opts.calibrate or opts.min_score is not None:
            return False
        return self.calibration() is None and self.searcher.info().count > 0

    @property
    def page_floor(self) -> float:
        """The page's "close match" floor: ``--min-score`` when given, else the catalog's
        calibrated floor, else the setting's ``min_score``."""
        if self.options.min_score is not None:
            return self.options.min_score
        cal = self.calibration()
        return cal.floor if cal is not None else self.searcher.settings.search.min_score

    def status(self) -> Status:
        """The live collection, its model and size; a readable error when unusable."""
        try:
            info = self.searcher.info()
        except VSearchError as exc:
            return Status(self.collection, error=str(exc))
        model = info.model
        return Status(
            self.collection,
            physical=info.name,
            model=model.describe() if model else "",
            count=info.count,
            has_text=bool(model and model.has_text),
            error="" if info.count else "the catalog is empty: index some products first",
        )

    def facets(self) -> Facets:
        """Distinct values of the facet keys and the numeric range key (empty on error)."""
        try:
            physical = self.searcher.store.require(self.collection)
            store = self.searcher.store
            values = {k: store.distinct(physical, k) for k in self.options.facet_keys}
            nums = [
                v
                for v in store.distinct(physical, self.options.range_key, limit=1_000_000)
                if isinstance(v, int | float) and not isinstance(v, bool)
            ]
        except VSearchError as exc:
            log.warning("cannot read filter values: %s", exc)
            return Facets()
        values = {k: [v for v in vs if isinstance(v, str)] for k, vs in values.items()}
        return Facets(values, (float(min(nums)), float(max(nums))) if nums else None)

    def warm_up(self) -> float:
        """Load the live collection's model now, so the first shopper does not wait."""
        t0 = time.perf_counter()
        try:
            model = self.searcher.info().model
            if model is None:
                return 0.0
            embedder = self.searcher.embedder_for(model)
            embedder.embed_images([Image.new("RGB", (64, 64), "white")])  # first forward
            if self._wants_calibration():
                self.calibrate()
        except VSearchError as exc:
            log.warning("warm-up skipped: %s", exc)
            return 0.0
        seconds = time.perf_counter() - t0
        log.info("model loaded in %.1fs", seconds)
        return seconds
