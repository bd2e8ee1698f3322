"""The query API: similar by photo, by catalog id ("more like this") and by text.

A :class:`Searcher` follows the collection's alias on every query, so a blue-green
promotion is picked up without a restart; the embedder is chosen from the provenance the
live collection records (and cached), so a query can never mix embedding spaces.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .config import Settings
from .embedder import Embedder, ModelInfo
from .errors import ConfigError, ItemNotFound, ProvenanceMismatch
from .filters import compile_filters, quote
from .images import open_image
from .query_crops import SCHEMES, crops, fuse
from .store import MilvusStore
from .types import CollectionInfo, Match, ProductMatch

log = logging.getLogger(__name__)
MAX_LIMIT = 1000
MAX_OFFSET = 10_000
ImageInput = Image.Image | bytes | str | Path
GroupBy = str | Sequence[str] | None
# Grouping happens here, over an over-fetched candidate list: Milvus's own group_by_field
# needs a scalar schema field, and the product key lives in the JSON metadata (Milvus Lite
# answers "group_by_field 'metadata[\"product\"]' not found in schema"). Each page asks
# for GROUP_OVERFETCH x (offset + limit) photos, at most MAX_GROUP_FETCH.
GROUP_OVERFETCH = 4
MAX_GROUP_FETCH = 400


class Searcher:
    """Nearest-neighbour queries over the live collection named by ``settings.store.collection``."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        store: MilvusStore | None = None,
        embedder: Embedder | None = None,
    ) -> None:
        self.settings = settings or Settings()
        self.store = store or MilvusStore(self.settings)
        self._embedders: dict[str, Embedder] = {}
        self._pinned = embedder
        self._lock = threading.Lock()
        self._live_cache: tuple[float, str, ModelInfo] | None = None

    # -- the live collection ----------------------------------------------------------
    def _live(self) -> tuple[str, ModelInfo]:
        """The physical collection behind the alias and its model.

        Re-resolved at most every ``settings.search.alias_ttl`` seconds (two metadata calls per query
        otherwise), so a promotion reaches a running server within that time, no restart.
        """
        cached = self._live_cache
        now = time.monotonic()
        if cached is not None and now - cached[0] < self.settings.search.alias_ttl:
            return cached[1], cached[2]
        physical = self.store.require(self.settings.store.collection)
        model = self.store.provenance(physical)
        if model is None:
            raise ProvenanceMismatch(f"collection {physical!r} has no vsearch provenance")
        self._live_cache = (now, physical, model)
        return physical, model

    def refresh(self) -> None:
        """Forget the cached alias resolution (the next query re-reads it)."""
        self._live_cache = None

    def info(self) -> CollectionInfo:
        """The live collection: physical name, model, item count and aliases."""
        physical, model = self._live()
        return CollectionInfo(
            physical, model, self.store.count(physical), self.store.aliases(physical)
        )

    def embedder_for(self, model: ModelInfo) -> Embedder:
        """The embedder of ``model``, loaded once and kept while it is live (a pinned one
        must match it)."""
        if self._pinned is not None:
            if self._pinned.info.key != model.key:
                raise ProvenanceMismatch(
                    f"the live collection was built with {model.describe()}, but this searcher "
                    f"uses {self._pinned.info.describe()}; queries would compare different "
                    "embedding spaces"
                )
            return self._pinned
        with self._lock:
            emb = self._embedders.get(model.key)
            if emb is None:
                emb = Embedder.from_settings(self.settings, model.name, model.pretrained)
                if emb.info.key != model.key:
                    raise ProvenanceMismatch(
                        f"collection needs {model.describe()} but loading it gave "
                        f"{emb.info.describe()} (weights changed on disk?)"
                    )
                # Only the live model's embedder is kept: after a promotion the old model's
                # weights are released (a query still running on it keeps its reference).
                self._embedders = {model.key: emb}
            return emb

    def has_text(self) -> bool:
        """Whether the live collection's model understands text queries."""
        return self._live()[1].has_text

    # -- queries ----------------------------------------------------------------------
    def similar(
        self,
        image: ImageInput,
        *,
        limit: int = 10,
        offset: int = 0,
        filters: Mapping[str, Any] | None = None,
        min_score: float | None = None,
        group_by: GroupBy = None,
    ) -> list[Match]:
        """Catalog items most similar to a photo (PIL image, bytes or path).

        With ``settings.search.query_crops`` "nine" (or "five") the photo is searched whole and as
        crops; each item scores its best match over them (see :mod:`search.query_crops`).
        group_by: a metadata key (or keys, the first present wins) such as ``product``:
        one :class:`ProductMatch` per product instead of one hit per photo.
        """
        physical, model = self._live()
        embedder = self.embedder_for(model)
        kw = {"group_by": group_by}
        if self.settings.search.query_crops == "none":  # decoded here: the settings' pixel limit
            size = embedder.info.image_size
            img = open_image(
                image, max_pixels=self.settings.indexing.max_image_pixels, draft_size=size
            )
            vector = embedder.embed_images([img])
            return self._search(physical, vector[0], limit, offset, filters, min_score, **kw)
        smallest = min(side for side, _, _ in SCHEMES[self.settings.search.query_crops])
        draft = int(embedder.info.image_size / smallest) + 1  # the smallest crop keeps detail
        img = open_image(
            image, max_pixels=self.settings.indexing.max_image_pixels, draft_size=draft
        )
        vectors = embedder.embed_images(crops(img, self.settings.search.query_crops))
        return self._search(physical, vectors, limit, offset, filters, min_score, **kw)

    def similar_by_id(
        self,
        item_id: str,
        *,
        limit: int = 10,
        offset: int = 0,
        filters: Mapping[str, Any] | None = None,
        min_score: float | None = None,
        group_by: GroupBy = None,
    ) -> list[Match]:
        """ "More like this": neighbours of a catalog item, without re-embedding it.

        Grouped, the item's own product (its other photos) is left out too.
        """
        physical, _ = self._live()
        rows = self.store.get(physical, [item_id], vectors=True)
        if not rows:
            raise ItemNotFound(f"no item with id {item_id!r} in {self.settings.store.collection!r}")
        vector = np.asarray(rows[0]["vector"], np.float32)
        exclude = f"(id != {quote(item_id)})"
        own = None
        if group_by:
            own = group_key(Match(item_id, 1.0, "", rows[0].get("metadata") or {}), group_by)
        return self._search(
            physical, vector, limit, offset, filters, min_score, extra=exclude,
            group_by=group_by, skip_group=own,
        )  # fmt: skip

    def similar_text(
        self,
        text: str,
        *,
        limit: int = 10,
        offset: int = 0,
        filters: Mapping[str, Any] | None = None,
        min_score: float | None = None,
        group_by: GroupBy = None,
    ) -> list[Match]:
        """Items matching a text description (models with a real text tower only)."""
        if not isinstance(text, str) or not text.strip():
            raise ConfigError("text query is empty")
        physical, model = self._live()
        vector = self.embedder_for(model).embed_texts([text.strip()])
        return self._search(
            physical, vector[0], limit, offset, filters, min_score, group_by=group_by
        )

    def get(self, item_id: str) -> Match:
        """One catalog item (score 1.0) by id."""
        physical, _ = self._live()
        rows = self.store.get(physical, [item_id])
        if not rows:
            raise ItemNotFound(f"no item with id {item_id!r} in {self.settings.store.collection!r}")
        row = rows[0]
        return Match(row["id"], 1.0, row.get("image", ""), row.get("metadata") or {})

    def _search(
        self,
        physical: str,
        vector: np.ndarray,
        limit: int,
        offset: int,
        filters: Mapping[str, Any] | None,
        min_score: float | None,
        extra: str = "",
        group_by: GroupBy = None,
        skip_group: str | None = None,
    ) -> list[Match]:
        """Search one vector, or several views of one query (rows, fused by best score)."""
        _check_paging(limit, offset)
        expr = compile_filters(filters)
        if extra:
            expr = f"{expr} and {extra}" if expr else extra
        floor = self.settings.search.min_score if min_score is None else min_score
        if group_by:
            want = offset + limit
            fetch = min(max(MAX_GROUP_FETCH, want), want * GROUP_OVERFETCH)
            hits = self.store.search(physical, np.atleast_2d(vector), limit=fetch, filter=expr)
            fused = [h for _, _, h in fuse([[(h.id, h.score, h) for h in v] for v in hits])]
            kept = [h for h in fused if h.score >= floor] if floor else fused
            groups = group_matches(kept, group_by)  # type: ignore[arg-type]
            groups = [g for g in groups if g.group != skip_group]
            return groups[offset : offset + limit]  # type: ignore[return-value]
        if vector.ndim == 1:
            hits = self.store.search(
                physical, vector[None, :], limit=limit, offset=offset, filter=expr
            )[0]
        else:  # every view's top (offset + limit) holds the fused top (offset + limit)
            per_view = self.store.search(physical, vector, limit=limit + offset, filter=expr)
            fused = fuse([[(h.id, h.score, h) for h in hits] for hits in per_view])
            hits = [h for _, _, h in fused[offset : offset + limit]]  # type: ignore[misc]
        return [h for h in hits if h.score >= floor] if floor else hits


def group_key(match: Match, keys: str | Sequence[str]) -> str:
    """The product a photo belongs to: the first of ``keys`` set in its metadata, else its
    own id (a photo without a product key is a product of its own)."""
    meta = match.metadata or {}
    for key in (keys,) if isinstance(keys, str) else keys:
        value = meta.get(key)
        if value is not None and str(value).strip():
            return f"{key}={value}"
    return f"id={match.id}"


def group_matches(hits: Sequence[Match], keys: str | Sequence[str]) -> list[ProductMatch]:
    """One entry per product, in best-score order; each counts its matching photos."""
    groups: dict[str, list[Match]] = {}
    for hit in sorted(hits, key=lambda h: -h.score):
        groups.setdefault(group_key(hit, keys), []).append(hit)
    out = []
    for key, members in groups.items():
        best = members[0]
        out.append(
            ProductMatch(
                best.id,
                best.score,
                best.image,
                best.metadata,
                group=key,
                photos=len(members),
                ids=tuple(m.id for m in members),
            )  # fmt: skip
        )
    return out


def _check_paging(limit: int, offset: int) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise ConfigError(f"limit must be an integer between 1 and {MAX_LIMIT}")
    if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset <= MAX_OFFSET:
        raise ConfigError(f"offset must be an integer between 0 and {MAX_OFFSET}")
