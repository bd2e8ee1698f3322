"""Error hierarchy of the search engine.

The library raises these; the CLI maps each family to one clear line and an exit code
(see ``cli.main``), the UI to a message a shopper understands.
"""

from __future__ import annotations


class VSearchError(Exception):
    """Base class of every error the library raises on purpose."""

    exit_code = 2


class ConfigError(VSearchError):
    """Bad settings, flags or arguments."""

    exit_code = 2


class ModelError(VSearchError):
    """A model could not be loaded or does not fit the request."""

    exit_code = 2


class TextSearchUnsupported(ModelError):
    """The model has no real text tower (e.g. the offline image-only default)."""


class ImageError(VSearchError):
    """An image could not be read, decoded or is unsafe (e.g. a decompression bomb)."""

    exit_code = 2


class CatalogError(VSearchError):
    """A catalog source (folder or manifest) cannot be read at all."""

    exit_code = 2


class StoreError(VSearchError):
    """Milvus failed or is unreachable."""

    exit_code = 4


class StoreLockedError(StoreError):
    """A Milvus Lite database is held by another process."""


class CollectionNotFound(StoreError):
    """The named collection or alias does not exist."""

    exit_code = 2


class ProvenanceMismatch(StoreError):
    """A collection was built with another model (or schema) than the one in use."""

    exit_code = 2


class ItemNotFound(VSearchError):
    """No item with that id in the collection."""

    exit_code = 2


class LockHeldError(VSearchError):
    """Another indexing run holds the lock on this collection."""

    exit_code = 3


class SafetyRefusal(VSearchError):
    """A run refused to do something destructive (e.g. delete most of the collection)."""

    exit_code = 5
