"""Guards in front of every route: credentials, request size and JSON depth.

* With ``--auth`` every route except ``/health`` (and what the login page itself needs:
  its HTML, static assets and the login form) answers 401 without credentials: HTTP Basic
  for API clients, or the session cookie Gradio's login form sets for browsers. This covers
  routes that neither FastAPI's dependency nor Gradio's own check reach: the API docs, both
  OpenAPI files, Gradio's heartbeat, cancel and reset.
* A JSON body may not pass :data:`MAX_JSON_BYTES` (413) nor nest deeper than
  :data:`MAX_JSON_DEPTH` (422): ``[`` x 5000 used to escape as a RecursionError (500).

Every refusal has the API's one error shape: ``{"detail": "...", "error": "ClassName"}``.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Callable
from typing import Any

from fastapi.responses import JSONResponse

MAX_JSON_BYTES = 256 * 1024
MAX_JSON_DEPTH = 16
PUBLIC_PATHS = frozenset({"/health", "/", "/login", "/login/", "/logout", "/favicon.ico"})
PUBLIC_PATHS |= frozenset({"/theme.css", "/robots.txt", "/manifest.json"})
PUBLIC_PREFIXES = ("/assets/", "/static/", "/svelte/", "/pwa_icon")


def error_body(status: int, detail: str, error: str) -> JSONResponse:
    """The one error shape of every reply: a message and the ``search.errors`` class name."""
    return JSONResponse({"detail": detail, "error": error}, status_code=status)


def json_depth(data: bytes | str, limit: int = MAX_JSON_DEPTH) -> int:
    """How deep JSON text nests (brackets outside strings); stops counting past ``limit``."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    return deepest
        elif ch in "]}":
            depth -= 1
    return deepest


def too_deep(data: bytes | str) -> str:
    """A refusal message when JSON nests too deep ('' when it is fine)."""
    if json_depth(data) > MAX_JSON_DEPTH:
        return f"JSON nested deeper than {MAX_JSON_DEPTH} levels"
    return ""


def basic_ok(header: str | None, auth: tuple[str, str]) -> bool:
    """Whether an ``Authorization: Basic ...`` header carries exactly these credentials."""
    if not header or header[:6].lower() != "basic ":
        return False
    try:
        user, sep, password = base64.b64decode(header[6:].strip()).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return False
    return bool(sep) and (
        secrets.compare_digest(user.encode(), auth[0].encode())
        & secrets.compare_digest(password.encode(), auth[1].encode())
    )


class RequestGuard:
    """ASGI middleware: authentication on every non-public route, JSON body limits.

    ``session_user``: given the request's cookies, the logged-in user of the page (from
    Gradio's login form) or None.
    """

    def __init__(
        self,
        app: Any,
        auth: tuple[str, str] | None,
        session_user: Callable[[dict[str, str]], str | None],
        json_routes: frozenset[str],
    ) -> None:
        self.app, self.auth, self.session_user = app, auth, session_user
        self.json_routes = json_routes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if self.auth is not None and not self._public(path) and not self._allowed(scope):
            reply = error_body(401, "authentication required", "AuthenticationError")
            reply.headers["WWW-Authenticate"] = 'Basic realm="vsearch"'
            if scope["type"] == "http":
                await reply(scope, receive, send)
            else:
                await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] == "http" and path in self.json_routes:
            await self._json(scope, receive, send)
            return
        await self.app(scope, receive, send)

    @staticmethod
    def _public(path: str) -> bool:
        return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)

    def _allowed(self, scope: Any) -> bool:
        if self.auth is None:
            return True
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if basic_ok(headers.get("authorization"), self.auth):
            return True
        cookies: dict[str, str] = {}
        for part in headers.get("cookie", "").split(";"):
            name, sep, value = part.strip().partition("=")
            if sep:
                cookies[name] = value
        return bool(cookies) and self.session_user(cookies) is not None

    async def _json(self, scope: Any, receive: Any, send: Any) -> None:
        """Read a JSON route's body (bounded), check its depth, then replay it to the app."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_JSON_BYTES:
                detail = f"request body too large (limit {MAX_JSON_BYTES:,} bytes)"
                await error_body(413, detail, "ConfigError")(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        problem = too_deep(body)
        if problem:
            await error_body(422, problem, "ConfigError")(scope, receive, send)
            return
        sent = False

        async def replay() -> Any:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
