"""What one API search may cost: filter checks, a cost ceiling and a time budget.

* Filters are checked against the catalog's own fields (cached per live collection): an
  unknown field (``colour``) or a text value for a numeric field (``{"price": "cheap"}``) is
  a 422 naming the field, not a silent empty answer.
* Milvus Lite evaluates a filter in Python, row by row and clause by clause (measured here,
  2,000 items with no match: 100 values 2.9 s, 1,000 values 14 s, i.e. 7-15 us per row per
  value; 8 fields x 1,000 values over the demo catalog took 33 s).
  On Lite a search whose ``values x rows`` passes :data:`LITE_FILTER_WORK` is refused
  (:class:`~search.errors.RequestTooCostly`, 422) before anything runs.
* Every search runs in a small pool with a time budget: past :data:`SEARCH_BUDGET_S` the
  reply is a 503 (:class:`~search.errors.ServerBusy`) with a message instead of a hang, and
  requests beyond the pool's size wait within the same budget.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

from search import errors
from search.filters import check_fields, check_limits, filter_values
from search.searcher import Searcher

T = TypeVar("T")
SEARCH_BUDGET_S = 15.0
SEARCH_WORKERS = 4
LITE_FILTER_WORK = 100_000  # values x rows: ~1-2 s of Lite's per-row filter on this CPU
FIELDS_TTL_S = 60.0


class SearchLimits:
    """Per-server guard of API searches (see the module docstring)."""

    def __init__(
        self,
        searcher: Searcher,
        *,
        budget_s: float | None = None,
        workers: int | None = None,
        lite_work: int | None = None,
    ) -> None:
        self.searcher = searcher
        self.budget_s = SEARCH_BUDGET_S if budget_s is None else budget_s
        self.lite_work = LITE_FILTER_WORK if lite_work is None else lite_work
        self._pool = ThreadPoolExecutor(
            workers or SEARCH_WORKERS, thread_name_prefix="vsearch-search"
        )
        self._lock = threading.Lock()
        self._cache: tuple[float, str, dict[str, str], int] | None = None

    def catalog_fields(self) -> tuple[dict[str, str], int]:
        """The live collection's metadata fields (name -> kind) and its item count.

        Cached for :data:`FIELDS_TTL_S`, and re-read at once after a promotion.
        """
        store = self.searcher.store
        physical = store.require(self.searcher.settings.store.collection)
        now = time.monotonic()
        with self._lock:
            cached = self._cache
        if cached is None or cached[1] != physical or now - cached[0] > FIELDS_TTL_S:
            cached = (now, physical, store.metadata_fields(physical), store.count(physical))
            with self._lock:
                self._cache = cached
        return cached[2], cached[3]

    def check(self, filters: Mapping[str, Any] | None) -> None:
        """Refuse unknown fields, wrong kinds and (on Lite) filters too costly to run."""
        if not filters:
            return
        check_limits(filters)  # before any store call
        fields, count = self.catalog_fields()
        check_fields(filters, fields)
        work = filter_values(filters) * count
        if work > self.lite_work and self.searcher.store.is_lite_engine():
            raise errors.RequestTooCostly(
                f"filters too costly for this catalog: {filter_values(filters):,} values over "
                f"{count:,} items (limit {self.lite_work:,} value-items on Milvus Lite); "
                "use fewer values"
            )

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` within the time budget, else :class:`ServerBusy`."""
        future = self._pool.submit(fn, *args, **kwargs)
        try:
            return future.result(timeout=self.budget_s)
        except FutureTimeout:
            future.cancel()
            raise errors.ServerBusy(
                f"the search did not finish within the server's budget of {self.budget_s:g} s; "
                "try again, or narrow the filters"
            ) from None

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
