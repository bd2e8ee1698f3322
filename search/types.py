"""Typed results: what callers get instead of raw Milvus dictionaries."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .embedder import ModelInfo


@dataclass(frozen=True)
class Match:
    """One search hit: catalog id, similarity (cosine, higher is closer), image, metadata."""

    id: str
    score: float
    image: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class StoredRow:
    """What the indexer needs to know about an indexed item to decide if it changed."""

    id: str
    content_hash: str
    meta_hash: str
    source_sig: str


@dataclass(frozen=True)
class CollectionInfo:
    """A physical collection, its model provenance, size and the aliases naming it."""

    name: str
    model: ModelInfo | None
    count: int
    aliases: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": self.model.to_dict() if self.model else None,
            "count": self.count,
            "aliases": list(self.aliases),
        }


@dataclass(frozen=True)
class ProductMatch(Match):
    """One product of a grouped search: its best photo (id, score, image, metadata), the
    group key, how many of its photos matched, and their ids (best first)."""

    group: str = ""
    photos: int = 1
    ids: tuple[str, ...] = ()
