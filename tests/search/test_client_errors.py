"""The error <-> HTTP status map is declared once (search.errors) and the client reads it."""

import httpx
import pytest

from search import errors
from search.client import RemoteSearcher

LEAVES = [
    errors.ItemNotFound,
    errors.CollectionNotFound,
    errors.AuthenticationError,
    errors.TextSearchUnsupported,
    errors.ImageError,
    errors.ConfigError,
    errors.CatalogError,
    errors.RequestTooCostly,
    errors.ProvenanceMismatch,
    errors.LockHeldError,
    errors.SafetyRefusal,
    errors.ServerBusy,
    errors.StoreError,
    errors.StoreLockedError,
    errors.ModelError,
]


def _client(status: int, body: dict | str) -> RemoteSearcher:
    def reply(_: httpx.Request) -> httpx.Response:
        if isinstance(body, dict):
            return httpx.Response(status, json=body)
        return httpx.Response(status, text=body)

    return RemoteSearcher("http://vsearch.test", transport=httpx.MockTransport(reply))


def test_every_error_has_one_status_and_survives_the_round_trip() -> None:
    expected = {
        errors.ItemNotFound: 404,
        errors.AuthenticationError: 401,
        errors.TextSearchUnsupported: 400,
        errors.ConfigError: 422,
        errors.RequestTooCostly: 422,
        errors.ProvenanceMismatch: 409,
        errors.ServerBusy: 503,
        errors.StoreLockedError: 503,
    }
    for cls, status in expected.items():
        assert errors.http_status(cls) == status, cls
    for cls in LEAVES:
        status = errors.http_status(cls("x"))
        body = {"detail": "what went wrong", "error": cls.__name__}
        with pytest.raises(cls, match="what went wrong") as info:
            _client(status, body).info()
        assert type(info.value) is cls


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (401, errors.AuthenticationError),
        (413, errors.ImageError),
        (422, errors.ConfigError),
        (429, errors.ServerBusy),
        (502, errors.StoreError),
        (418, errors.VSearchError),
    ],
)
def test_a_reply_without_a_class_name_maps_by_status(status: int, cls: type) -> None:
    with pytest.raises(errors.VSearchError) as info:
        _client(status, "<html>proxy error</html>").info()
    assert type(info.value) is cls
    # a name that is not one of ours is never instantiated
    with pytest.raises(errors.VSearchError) as info:
        _client(status, {"detail": "x", "error": "SystemExit"}).info()
    assert type(info.value) is cls
