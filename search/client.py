"""Remote client of a ``vsearch serve`` process, with the in-process Searcher's interface.

Switch a script between local and remote by changing one line::

    searcher = Searcher(Settings.of(uri="./data/vsearch.db"))       # in process
    searcher = RemoteSearcher("http://127.0.0.1:7860", auth=("u", "p"))  # over HTTP

Same method names, the same :class:`~search.types.Match` results, and the same
:mod:`search.errors` exceptions (the server names the error class in its JSON body).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from . import errors
from .embedder import ModelInfo
from .filters import Range
from .images.upload import shrink_picture, shrink_upload
from .types import CollectionInfo, Match, ProductMatch

log = logging.getLogger(__name__)


class RemoteSearcher:
    """Queries a vsearch server's JSON API (``/api/...``) over HTTP."""

    def __init__(
        self,
        base_url: str,
        *,
        auth: tuple[str, str] | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        shrink: bool = True,
    ) -> None:
        """``shrink``: send a big photo reduced as the server would reduce it (1024 px on its
        longest side, a JPEG; :func:`search.images.upload.shrink_upload`) instead of the
        whole file; False sends the bytes as they are."""
        self.base_url = base_url.rstrip("/")
        self.shrink = shrink
        self._http = httpx.Client(
            base_url=self.base_url,
            auth=httpx.BasicAuth(*auth) if auth else None,
            timeout=timeout,
            transport=transport,
            trust_env=False,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RemoteSearcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the Searcher interface ---------------------------------------------------------
    def info(self) -> CollectionInfo:
        data = self._request("GET", "/api/info")["live"]
        model = ModelInfo.from_dict(data["model"]) if data.get("model") else None
        return CollectionInfo(data["name"], model, int(data["count"]), tuple(data["aliases"]))

    def has_text(self) -> bool:
        return bool(self._request("GET", "/api/info")["has_text"])

    def get(self, item_id: str) -> Match:
        return _match(self._request("GET", "/api/item", params={"id": item_id})["item"])

    def similar(
        self,
        image: Image.Image | bytes | str | Path,
        *,
        limit: int = 10,
        offset: int = 0,
        filters: Mapping[str, Any] | None = None,
        min_score: float | None = None,
        group_by: str | None = None,
    ) -> list[Match]:
        """Items similar to a photo: a PIL image, raw bytes or a local file path."""
        data: dict[str, str] = {"limit": str(limit), "offset": str(offset)}
        if group_by:
            data["group_by"] = group_by
        if filters:
            import json

            data["filters"] = json.dumps(to_json_filters(filters))
        if min_score is not None:
            data["min_score"] = repr(float(min_score))
        files = {"image": ("query", _image_bytes(image, self.shrink), "application/octet-stream")}
        body = self._request("POST", "/api/search/image", data=data, files=files)
        return [_match(m) for m in body["matches"]]

    def similar_by_id(
        self,
        item_id: str,
        *,
        limit: int = 10,
        offset: int = 0,
        filters: Mapping[str, Any] | None = None,
        min_score: float | None = None,
        group_by: str | None = None,
    ) -> list[Match]:
        payload = _query("id", item_id, limit, offset, filters, min_score, group_by)
        return [_match(m) for m in self._request("POST", "/api/search/id", json=payload)["matches"]]

    def similar_text(
        self,
        text: str,
        *,
        limit: int = 10,
        offset: int = 0,
        filters: Mapping[str, Any] | None = None,
        min_score: float | None = None,
        group_by: str | None = None,
    ) -> list[Match]:
        payload = _query("text", text, limit, offset, filters, min_score, group_by)
        body = self._request("POST", "/api/search/text", json=payload)
        return [_match(m) for m in body["matches"]]

    # -- transport ----------------------------------------------------------------------
    def _request(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        try:
            resp = self._http.request(method, path, **kw)
        except httpx.TimeoutException as exc:
            raise errors.StoreError(f"vsearch server at {self.base_url} timed out: {exc}") from exc
        except httpx.HTTPError as exc:
            raise errors.StoreError(
                f"cannot reach vsearch server at {self.base_url}: {exc}"
            ) from exc
        if resp.status_code >= 400:
            raise _error(resp)
        try:
            return resp.json()
        except ValueError as exc:
            raise errors.StoreError(f"vsearch server sent a non-JSON answer to {path}") from exc


def _error(resp: httpx.Response) -> errors.VSearchError:
    """The server's error as the same search.errors class (by name, else by status).

    The class <-> status map lives in :mod:`search.errors` (``HTTP_STATUS``), shared with
    the API that produced the reply.
    """
    try:
        body = resp.json()
    except ValueError:
        body = {}
    detail = body.get("detail") if isinstance(body, dict) else None
    if not isinstance(detail, str):
        detail = f"HTTP {resp.status_code}: {resp.text[:200]}"
    name = body.get("error") if isinstance(body, dict) else None
    cls = errors.error_for_reply(resp.status_code, name if isinstance(name, str) else None)
    if resp.status_code == 401:
        detail = f"authentication failed: {detail}"
    return cls(detail)


def _match(data: Mapping[str, Any]) -> Match:
    """A match from JSON: a ProductMatch when the search was grouped, as in process."""
    fields = (str(data["id"]), float(data["score"]), str(data.get("image", "")))
    metadata = data.get("metadata") or {}
    if data.get("group") is not None:
        ids = tuple(str(i) for i in data.get("ids") or ())
        return ProductMatch(*fields, metadata, str(data["group"]), int(data["photos"]), ids)
    return Match(*fields, metadata)


def _query(
    key: str,
    value: str,
    limit: int,
    offset: int,
    filters: Mapping[str, Any] | None,
    min_score: float | None,
    group_by: str | None = None,
) -> dict[str, Any]:
    payload: dict[str, Any] = {key: value, "limit": limit, "offset": offset}
    if group_by:
        payload["group_by"] = group_by
    if filters:
        payload["filters"] = to_json_filters(filters)
    if min_score is not None:
        payload["min_score"] = float(min_score)
    return payload


def to_json_filters(filters: Mapping[str, Any]) -> dict[str, Any]:
    """Filters as JSON: Range -> {"gte"/"gt": .., "lte"/"lt": ..}, sets -> lists."""
    out: dict[str, Any] = {}
    for key, spec in filters.items():
        if spec is None:
            continue
        if isinstance(spec, Range):
            ops: dict[str, Any] = {}
            if spec.min is not None:
                ops["gte" if spec.min_inclusive else "gt"] = spec.min
            if spec.max is not None:
                ops["lte" if spec.max_inclusive else "lt"] = spec.max
            out[key] = ops
        elif isinstance(spec, set | frozenset | tuple):
            out[key] = sorted(spec, key=repr) if isinstance(spec, set | frozenset) else list(spec)
        else:
            out[key] = spec
    return out


def _image_bytes(image: Image.Image | bytes | str | Path, shrink: bool) -> bytes:
    """What to upload: a picture as a PNG, a file or bytes as they are; a big one reduced
    first when ``shrink``."""
    if isinstance(image, Image.Image):
        buf = io.BytesIO()
        (shrink_picture(image) if shrink else image).convert("RGB").save(buf, "PNG")
        return buf.getvalue()
    if isinstance(image, bytes | bytearray):
        data = bytes(image)
    else:
        try:
            data = Path(image).read_bytes()
        except OSError as exc:
            raise errors.ImageError(f"cannot read {image}: {exc.strerror or exc}") from exc
    return shrink_upload(data) if shrink else data
