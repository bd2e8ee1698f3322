"""``vsearch serve``: the shop page (Gradio) and the JSON API in one process."""

from __future__ import annotations

import argparse
import os

from search.errors import ConfigError

from ..main import add_store_args, settings_from

DEFAULT_PORT = 7860


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve the shop page and the HTTP API (binds 127.0.0.1 by default)",
        description="Serve the Gradio shop page at / and the JSON API under /api "
        "(OpenAPI at /api/openapi.json, docs at /api/docs) against the live collection.",
    )
    p.add_argument("--host", help="interface to bind (env VSEARCH_HOST; default 127.0.0.1)")
    p.add_argument("--port", type=int, help=f"port (env VSEARCH_PORT; default {DEFAULT_PORT})")
    p.add_argument(
        "--auth",
        metavar="USER:PASSWORD",
        help="require this login for the page and the API (env VSEARCH_AUTH)",
    )
    p.add_argument(
        "--min-score",
        type=float,
        help="similarity floor: results below it are not shown (env VSEARCH_MIN_SCORE; "
        "default: the page uses the catalog's calibrated floor)",
    )
    p.add_argument(
        "--max-upload-mb",
        type=float,
        help="largest query photo accepted, in MB (env VSEARCH_MAX_UPLOAD_MB; default 10)",
    )
    p.add_argument("--page-size", type=int, help="results per page shown by default (default 12)")
    p.add_argument(
        "--concurrency",
        type=int,
        help="page searches run at once; more wait in the queue (env VSEARCH_CONCURRENCY; "
        "default 4)",
    )
    p.add_argument("--title", help="page title")
    p.add_argument("--no-warmup", action="store_true", help="do not load the model before serving")
    add_store_args(p)
    p.add_argument("--device", help="auto, cpu, cuda (env VSEARCH_DEVICE)")
    p.set_defaults(handler=run)


def _auth(raw: str | None) -> tuple[str, str] | None:
    if not raw:
        return None
    user, sep, password = raw.partition(":")
    if not sep or not user or not password:
        raise ConfigError("--auth / VSEARCH_AUTH must be USER:PASSWORD")
    return user, password


def _number(raw: str | None, kind: type, name: str) -> object:
    if raw is None or raw == "":
        return None
    try:
        return kind(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a valid {kind.__name__}") from None


def options_from(args: argparse.Namespace, env: dict[str, str] | None = None):  # noqa: ANN201
    """UiOptions from flags, then VSEARCH_* variables, then defaults."""
    from ui.service import DEFAULT_MAX_UPLOAD, UiOptions

    env = dict(os.environ) if env is None else env
    port = (
        args.port
        if args.port is not None
        else _number(env.get("VSEARCH_PORT"), int, "VSEARCH_PORT")
    )
    upload_mb = args.max_upload_mb
    if upload_mb is None:
        upload_mb = _number(env.get("VSEARCH_MAX_UPLOAD_MB"), float, "VSEARCH_MAX_UPLOAD_MB")
    port = DEFAULT_PORT if port is None else port
    if not 0 < int(port) < 65536:
        raise ConfigError(f"port {port} is out of range")
    max_upload = DEFAULT_MAX_UPLOAD if upload_mb is None else int(float(upload_mb) * 1024 * 1024)
    if max_upload <= 0:
        raise ConfigError("--max-upload-mb must be positive")
    kw: dict[str, object] = {
        "host": args.host or env.get("VSEARCH_HOST") or "127.0.0.1",
        "port": int(port),
        "auth": _auth(args.auth or env.get("VSEARCH_AUTH")),
        "max_upload_bytes": max_upload,
        "min_score": args.min_score,
    }
    if args.page_size is not None:
        if not 1 <= args.page_size <= 100:
            raise ConfigError("--page-size must be between 1 and 100")
        kw["page_size"] = args.page_size
    if args.title:
        kw["title"] = args.title
    concurrency = args.concurrency
    if concurrency is None:
        concurrency = _number(env.get("VSEARCH_CONCURRENCY"), int, "VSEARCH_CONCURRENCY")
    if concurrency is not None:
        if not 1 <= int(concurrency) <= 64:
            raise ConfigError("--concurrency must be between 1 and 64")
        kw["concurrency"] = int(concurrency)
    return UiOptions(**kw)  # type: ignore[arg-type]


def run(args: argparse.Namespace) -> int:
    options = options_from(args)
    settings = settings_from(args)
    from ui.server import serve

    serve(settings, options, warm=not args.no_warmup, announce=lambda line: print(line, flush=True))
    return 0
