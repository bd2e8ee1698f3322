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


class RequestTooCostly(VSearchError):
    """A query would cost more than the server allows (too many filter values, too slow)."""

    exit_code = 2


class ServerBusy(StoreError):
    """The search did not finish within the server's time budget; retry or narrow it."""


class AuthenticationError(ConfigError):
    """Missing or wrong credentials for a vsearch server."""


# -- HTTP status of each error family: declared once, used by the API (class -> status) and
# by the remote client (the class named in the reply, else the status -> class fallback).
HTTP_STATUS: dict[type[VSearchError], int] = {
    ItemNotFound: 404,
    CollectionNotFound: 404,
    AuthenticationError: 401,
    TextSearchUnsupported: 400,
    ImageError: 422,
    ConfigError: 422,
    CatalogError: 422,
    RequestTooCostly: 422,
    ProvenanceMismatch: 409,
    LockHeldError: 409,
    SafetyRefusal: 409,
    ServerBusy: 503,
    StoreError: 503,
    ModelError: 503,
    VSearchError: 400,
}
# statuses a reply may carry without naming a class (a proxy, the framework itself)
STATUS_FALLBACK: dict[int, type[VSearchError]] = {
    400: ConfigError,
    401: AuthenticationError,
    403: AuthenticationError,
    404: ItemNotFound,
    405: ConfigError,
    409: ProvenanceMismatch,
    413: ImageError,
    422: ConfigError,
    429: ServerBusy,
    503: StoreError,
    504: ServerBusy,
}


def http_status(exc: VSearchError | type[VSearchError]) -> int:
    """The HTTP status of an error: its nearest class in :data:`HTTP_STATUS`."""
    cls = exc if isinstance(exc, type) else type(exc)
    for base in cls.__mro__:
        if base in HTTP_STATUS:
            return HTTP_STATUS[base]
    return 400


def error_for_reply(status: int, name: str | None) -> type[VSearchError]:
    """The error class of an HTTP error reply: the class it names, else by status."""
    cls = globals().get(name or "")
    if isinstance(cls, type) and issubclass(cls, VSearchError):
        return cls
    if status in STATUS_FALLBACK:
        return STATUS_FALLBACK[status]
    return StoreError if status >= 500 else VSearchError
