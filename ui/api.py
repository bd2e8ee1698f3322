"""JSON HTTP API: search by uploaded photo, by catalog id and by text; items, images, health.

Bad input is a 4xx with a message, never a 5xx: request models validate shapes and bounds,
``search.errors`` classes map to status codes (``search.errors.HTTP_STATUS``, shared with
the client), and every error has one shape, ``{"detail": "...", "error": "ClassName"}``,
so :class:`search.client.RemoteSearcher` can raise the same exception. Filters are checked
against the catalog's fields and their cost, and searches run within a time budget
(:mod:`ui.limits`). Replies never carry absolute server paths (:func:`redact`).
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from pathlib import PurePosixPath
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, File, Form, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from search import errors
from search.types import Match, ProductMatch

from . import schemas as s
from .guard import MAX_JSON_BYTES, error_body, too_deep
from .images import image_ref
from .limits import SearchLimits
from .service import CatalogService

log = logging.getLogger(__name__)

BASIC = HTTPBasic(auto_error=False)
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": s.ErrorOut} for code in (400, 401, 404, 409, 413, 422, 503)
}
# an absolute POSIX path of two or more parts (also after "local-dir:"), not inside a URL
# (http://host/x: "//" and a path after a host name are skipped) nor one of our routes
_ABS_PATH = re.compile(
    r"(?<![\w/.~-])(/(?!/|api/|gradio_api/)[^\s'\"`,;()\[\]<>]+/[^\s'\"`,;()\[\]<>]+)"
)


def redact(text: str) -> str:
    """``text`` with absolute server paths cut to their last part (``…/name``)."""
    return _ABS_PATH.sub(lambda m: "…/" + PurePosixPath(m.group(1)).name, text)


def _redacted(data: Any) -> Any:
    """``data`` (JSON-like) with every string redacted (e.g. a ``local-dir:`` model path)."""
    if isinstance(data, str):
        return redact(data)
    if isinstance(data, dict):
        return {k: _redacted(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_redacted(v) for v in data]
    return data


def error_response(status: int, detail: str, error: str) -> JSONResponse:
    """The API's one error shape (:func:`ui.guard.error_body`), server paths redacted."""
    return error_body(status, redact(detail), error)


def _framework_error(status: int) -> str:
    """The ``error`` name of a reply the framework makes itself (no search.errors raised)."""
    if status in (401, 403):
        return errors.AuthenticationError.__name__
    cls = errors.STATUS_FALLBACK.get(status, errors.VSearchError)
    return "ConfigError" if status in (404, 405) else cls.__name__


def install_error_handlers(app: FastAPI) -> None:
    """Map library errors, validation failures and framework errors to the one JSON shape."""

    @app.exception_handler(errors.VSearchError)
    async def _vsearch(_: Request, exc: errors.VSearchError) -> JSONResponse:
        return error_response(errors.http_status(exc), str(exc), type(exc).__name__)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, _describe(exc.errors()), "ConfigError")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        reply = error_response(exc.status_code, detail, _framework_error(exc.status_code))
        for key, value in (exc.headers or {}).items():
            reply.headers[key] = value
        return reply

    @app.exception_handler(RecursionError)
    async def _deep(_: Request, exc: RecursionError) -> JSONResponse:
        return error_response(422, "request nested too deep", "ConfigError")


def _describe(problems: Any) -> str:
    parts = []
    for p in list(problems)[:5]:
        where = ".".join(str(x) for x in p.get("loc", ()) if x not in ("body",))
        parts.append(f"{where}: {p.get('msg', 'invalid')}" if where else str(p.get("msg")))
    return "invalid request: " + "; ".join(parts)


def _auth_dependency(auth: tuple[str, str] | None) -> list[Any]:
    if auth is None:
        return []
    user, password = auth

    def check(creds: Annotated[HTTPBasicCredentials | None, Depends(BASIC)]) -> None:
        ok = (
            creds is not None
            and secrets.compare_digest(creds.username.encode(), user.encode())
            and secrets.compare_digest(creds.password.encode(), password.encode())
        )
        if not ok:
            raise HTTPException(401, "authentication required", {"WWW-Authenticate": "Basic"})

    return [Depends(check)]


def _out(m: Match, floor: float | None = None) -> s.MatchOut:
    """A match as JSON: a local image is named by its file name, never its server path;
    ``floor``: the catalog's calibrated close-match floor (``confident``)."""
    is_url = m.image.startswith(("http://", "https://"))
    url = m.image if is_url else f"/api/image?id={quote(m.id, safe='')}"
    image = m.image if is_url else PurePosixPath(m.image).name
    grouped = isinstance(m, ProductMatch)
    return s.MatchOut(
        id=m.id,
        score=m.score,
        image=image,
        image_url=url,
        metadata=m.metadata,
        confident=None if floor is None else m.score >= floor,
        group=m.group if grouped else None,
        photos=m.photos if grouped else None,
        ids=list(m.ids) if grouped else None,
    )


def _page(matches: list[Match], limit: int, offset: int, floor: float | None) -> s.SearchResponse:
    nxt = offset + limit if len(matches) >= limit else None
    return s.SearchResponse(
        matches=[_out(m, floor) for m in matches], limit=limit, offset=offset, next_offset=nxt
    )


def build_router(service: CatalogService) -> tuple[APIRouter, APIRouter]:
    """The public router (/health) and the API router (/api/..., behind auth if set)."""
    searcher = service.searcher
    opts = service.options
    limits = SearchLimits(searcher)
    public = APIRouter()
    api = APIRouter(prefix="/api", dependencies=_auth_dependency(opts.auth), responses=ERRORS)

    def floor(value: float | None) -> float:
        return service.min_score if value is None else value

    def close_match() -> float | None:
        """The calibrated floor behind each result's ``confident`` flag (None: uncalibrated)."""
        cal = service.calibration()
        return cal.floor if cal is not None else None

    @public.get("/health", response_model=s.HealthOut, responses={503: {"model": s.HealthOut}})
    def health() -> JSONResponse:
        """Liveness and readiness: 200 when the collection answers, 503 otherwise."""
        st = service.status()
        unreachable = bool(st.error) and not st.physical
        body = s.HealthOut(
            status="ok" if not unreachable else "unavailable",
            collection=st.collection,
            count=st.count,
            model=redact(st.model),
            error=redact(st.error),
        )
        return JSONResponse(body.model_dump(), status_code=503 if unreachable else 200)

    @api.get("/info", response_model=s.InfoOut)
    def info() -> s.InfoOut:
        """The live collection behind the alias, its model and size."""
        live = searcher.info()
        return s.InfoOut(
            collection=service.collection,
            live=s.CollectionOut(**_redacted(live.to_dict())),
            has_text=bool(live.model and live.model.has_text),
        )

    @api.get("/facets", response_model=s.FacetsOut)
    def facets() -> s.FacetsOut:
        """Filter choices: distinct category values and the price range."""
        searcher.info()  # a clear 404/503 instead of empty facets
        f = service.facets()
        return s.FacetsOut(
            values=f.values, range_key=opts.range_key, range=list(f.range) if f.range else None
        )

    @api.get("/item", response_model=s.ItemOut)
    def item(id: Annotated[s.ItemId, Query(description="catalog id")]) -> s.ItemOut:
        """One catalog item by id."""
        return s.ItemOut(item=_out(searcher.get(id)))

    @api.get(
        "/image",
        response_class=Response,
        responses={200: {"content": {"image/*": {}}}, 307: {"description": "URL image"}},
    )
    def image(id: Annotated[s.ItemId, Query(description="catalog id")]) -> Response:
        """The image of a catalog item (only files that are rows of the collection)."""
        ref = image_ref(searcher, id)
        if ref.url:
            return RedirectResponse(ref.url, status_code=307)
        return FileResponse(
            ref.path, media_type=ref.media_type, headers={"Cache-Control": "max-age=300"}
        )

    @api.post("/search/id", response_model=s.SearchResponse)
    def search_id(q: s.IdQuery) -> s.SearchResponse:
        """'More like this': neighbours of a catalog item (no re-embedding)."""
        kw = _kw(q, floor(q.min_score))
        limits.check(kw["filters"])
        hits = limits.run(searcher.similar_by_id, q.id, **kw)
        return _page(hits, q.limit, q.offset, close_match())

    @api.post("/search/text", response_model=s.SearchResponse)
    def search_text(q: s.TextQuery) -> s.SearchResponse:
        """Items matching a text description (400 for image-only models)."""
        kw = _kw(q, floor(q.min_score))
        limits.check(kw["filters"])
        hits = limits.run(searcher.similar_text, q.text, **kw)
        return _page(hits, q.limit, q.offset, close_match())

    @api.post(
        "/search/image", response_model=s.SearchResponse, responses={413: {"model": s.ErrorOut}}
    )
    def search_image(
        image: Annotated[bytes, File(description="query photo (JPEG, PNG, WebP...)")],
        limit: Annotated[int, Form(ge=1, le=s.MAX_LIMIT)] = 10,
        offset: Annotated[int, Form(ge=0, le=s.MAX_OFFSET)] = 0,
        filters: Annotated[str | None, Form(description="JSON object of filters")] = None,
        min_score: Annotated[float | None, Form(ge=-1e300, le=1e300)] = None,
        group_by: Annotated[
            str | None,
            Form(
                min_length=1,
                max_length=64,
                pattern=r"^[A-Za-z0-9_.-]+$",
                description="metadata key: one result per product",
            ),
        ] = None,
    ) -> s.SearchResponse | JSONResponse:
        """Catalog items most similar to an uploaded photo (multipart form)."""
        if len(image) > opts.max_upload_bytes:
            return error_response(
                413,
                f"photo too large: {len(image):,} bytes (limit {opts.max_upload_bytes:,})",
                "ImageError",
            )
        parsed = _parse_filters(filters)
        limits.check(parsed)
        kw = {"limit": limit, "offset": offset, "filters": parsed, "group_by": group_by}
        hits = limits.run(searcher.similar, image, **kw, min_score=floor(min_score))
        return _page(hits, limit, offset, close_match())

    known = {r.path for r in api.routes if hasattr(r, "path")}

    @api.api_route(
        "/{rest:path}",
        methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"],
        include_in_schema=False,
    )
    def not_an_operation(rest: str) -> None:
        """Unknown /api paths and wrong methods get the API's error shape, not the page's."""
        if f"/api/{rest}" in known:
            raise HTTPException(405, "method not allowed on this route")
        raise HTTPException(404, "no such API route")

    return public, api


def _kw(q: s.Paging, min_score: float) -> dict[str, Any]:
    return {
        "limit": q.limit,
        "offset": q.offset,
        "filters": s.plain_filters(q.filters),
        "min_score": min_score,
        "group_by": q.group_by,
    }


def _parse_filters(raw: str | None) -> dict[str, Any] | None:
    if raw is None or not raw.strip():
        return None
    if len(raw) > MAX_JSON_BYTES:
        raise errors.ConfigError(f"filters too large (limit {MAX_JSON_BYTES:,} characters)")
    problem = too_deep(raw)
    if problem:
        raise errors.ConfigError(f"filters: {problem}")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise errors.ConfigError(f"filters is not valid JSON: {exc}") from None
    try:
        return s.plain_filters(s.FILTERS.validate_python(data))
    except ValidationError as exc:
        raise errors.ConfigError(
            "invalid filters: " + _describe(exc.errors()).removeprefix("invalid request: ")
        ) from None
