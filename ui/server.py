"""One FastAPI process: the JSON API under /api, /health, and the Gradio page at /.

Nothing here phones home: the page is built with Gradio analytics off, and the app is never
shared through a tunnel. The library leaves the process environment alone; ``vsearch serve``
(the entry point) also switches off Gradio's and the Hugging Face hub's telemetry.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import gradio as gr
from fastapi import FastAPI, Request
from fastapi.responses import Response

from search import Searcher, Settings

from .api import build_router, error_response, install_error_handlers
from .app import CSS, build_blocks
from .docs import DOCS_URL, install_docs
from .guard import RequestGuard
from .service import CatalogService, UiOptions
from .upload import shrink_js

log = logging.getLogger(__name__)
UPLOAD_ROUTES = ("/api/search/image",)
JSON_ROUTES = frozenset({"/api/search/id", "/api/search/text"})
OPENAPI_URL = "/api/openapi.json"
FORM_OVERHEAD = 64 * 1024


def build_app(
    settings: Settings, options: UiOptions | None = None, *, searcher: Searcher | None = None
) -> FastAPI:
    """The ASGI app: API routes first, then Gradio mounted at the root."""
    options = options or UiOptions()
    service = CatalogService(searcher or Searcher(settings), options)
    app = FastAPI(
        title="vsearch",
        summary="Visual similarity search over a product catalog",
        version="1",
        docs_url=None,  # served from local assets: see ui.docs
        redoc_url=None,
        openapi_url=OPENAPI_URL,
        swagger_ui_oauth2_redirect_url=None,
    )
    app.state.service = service
    install_error_handlers(app)
    install_docs(app, OPENAPI_URL, "vsearch")
    _limit_uploads(app, options.max_upload_bytes)
    public, api = build_router(service)
    app.include_router(public)
    app.include_router(api)
    blocks = build_blocks(service)
    app = gr.mount_gradio_app(
        app,
        blocks,
        path="/",
        auth=options.auth,
        max_file_size=options.max_upload_bytes,
        show_error=False,
        footer_links=["api"],
        theme=gr.themes.Default(),
        css=CSS,
        js=shrink_js(service.searcher.settings.indexing.max_image_pixels, options.max_upload_bytes),
        ssr_mode=False,
        server_name=options.host,
        server_port=options.port,
    )
    # outermost: credentials on every route but /health, JSON size and depth limits
    app.add_middleware(
        RequestGuard,
        auth=options.auth,
        session_user=_gradio_session(app),
        json_routes=JSON_ROUTES,
    )
    return app


def _gradio_session(app: FastAPI) -> Callable[[dict[str, str]], str | None]:
    """The user logged in through Gradio's login form, from a request's cookies."""
    gradio_apps = [r.app for r in app.routes if hasattr(getattr(r, "app", None), "cookie_id")]

    def user(cookies: dict[str, str]) -> str | None:
        for g in gradio_apps:
            token = cookies.get(f"access-token-{g.cookie_id}") or cookies.get(
                f"access-token-unsecure-{g.cookie_id}"
            )
            if token and token in g.tokens:
                return str(g.tokens[token])
        return None

    return user


def _limit_uploads(app: FastAPI, max_bytes: int) -> None:
    """Refuse an oversized photo upload from its Content-Length, before reading it."""

    @app.middleware("http")
    async def limit(request: Request, call_next):  # type: ignore[no-untyped-def]
        if request.url.path in UPLOAD_ROUTES:
            length = request.headers.get("content-length")
            if length is not None and length.isdigit() and int(length) > max_bytes + FORM_OVERHEAD:
                return error_response(
                    413, f"photo too large (limit {max_bytes:,} bytes)", "ImageError"
                )
        response: Response = await call_next(request)
        return response

    # A chunked upload has no Content-Length: count the body as it streams in and stop at
    # the limit, instead of buffering (and spooling) an unbounded body before refusing it.
    app.add_middleware(_StreamCap, cap=max_bytes + FORM_OVERHEAD, limit=max_bytes)


class _StreamCap:
    """ASGI middleware: an upload route's body may not pass ``cap`` bytes, streamed or not.

    Past the cap the app sees the body end, and whatever it answers is replaced by a 413.
    """

    def __init__(self, app: Any, cap: int, limit: int) -> None:
        self.app, self.cap, self.limit = app, cap, limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] not in UPLOAD_ROUTES:
            await self.app(scope, receive, send)
            return
        state = {"seen": 0, "over": False, "answered": False}

        async def capped() -> Any:
            if state["over"]:
                return {"type": "http.request", "body": b"", "more_body": False}
            message = await receive()
            if message["type"] == "http.request":
                state["seen"] += len(message.get("body", b""))
                if state["seen"] > self.cap:
                    state["over"] = True
                    return {"type": "http.request", "body": b"", "more_body": False}
            return message

        async def guarded(message: Any) -> None:
            if not state["over"]:
                await send(message)
            elif not state["answered"]:
                state["answered"] = True
                detail = f"photo too large (limit {self.limit:,} bytes)"
                await error_response(413, detail, "ImageError")(scope, capped, send)

        await self.app(scope, capped, guarded)


def serve(
    settings: Settings,
    options: UiOptions,
    *,
    warm: bool = True,
    announce: Callable[[str], None] | None = None,
) -> None:
    """Build the app, load the model, and serve until interrupted.

    announce: called with one human line (URL, collection, size) once the app is ready.
    """
    import uvicorn

    app = build_app(settings, options)
    service: CatalogService = app.state.service
    if warm:
        service.warm_up()
    st = service.status()
    if st.error:
        log.warning("serving, but: %s", st.error)
    else:
        log.info("serving %s: %s, %d items", st.collection, st.model, st.count)
    url = f"http://{options.host}:{options.port}/"
    log.info("listening on %s", url)
    if announce:
        size = f"{st.count:,} items" if not st.error else st.error
        announce(
            f"vsearch: serving {st.collection} ({size}) at {url} - API docs at "
            f"{url.rstrip('/')}{DOCS_URL}"
        )
    uvicorn.run(app, host=options.host, port=options.port, log_level="warning")
