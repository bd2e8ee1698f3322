"""vsearch core library: embeddings, the Milvus store, filters and queries.

Typical use::

    from search import Searcher, Settings, Range

    searcher = Searcher(Settings.of(uri="./data/vsearch.db"))
    for match in searcher.similar("query.jpg", limit=5, filters={"price": Range(max=50)}):
        print(match.id, match.score, match.metadata.get("title"))
"""

from .config import Settings
from .embedder import Embedder, ModelInfo
from .errors import (
    CatalogError,
    CollectionNotFound,
    ConfigError,
    ImageError,
    ItemNotFound,
    LockHeldError,
    ModelError,
    ProvenanceMismatch,
    SafetyRefusal,
    StoreError,
    StoreLockedError,
    TextSearchUnsupported,
    VSearchError,
)
from .filters import Range, compile_filters
from .images import open_image
from .searcher import Searcher
from .store import MilvusStore
from .types import CollectionInfo, Match

__all__ = [
    "CatalogError",
    "CollectionInfo",
    "CollectionNotFound",
    "ConfigError",
    "Embedder",
    "ImageError",
    "ItemNotFound",
    "LockHeldError",
    "Match",
    "MilvusStore",
    "ModelError",
    "ModelInfo",
    "ProvenanceMismatch",
    "Range",
    "SafetyRefusal",
    "Searcher",
    "Settings",
    "StoreError",
    "StoreLockedError",
    "TextSearchUnsupported",
    "VSearchError",
    "compile_filters",
    "open_image",
]
