"""``vsearch serve``: the shop page (Gradio) and the JSON API in one process."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping

from search.config import ENV_PREFIX
from search.options import from_env

from ..flags import add_flags, given
from ..main import add_store_args, settings_from


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve the shop page and the HTTP API (binds 127.0.0.1 by default)",
        description="Serve the Gradio shop page at / and the JSON API under /api "
        "(OpenAPI at /api/openapi.json, docs at /api/docs) against the live collection.",
    )
    add_flags(p.add_argument_group("serving"), _options_class(), unset=True, env_prefix="VSEARCH_")
    p.add_argument("--no-warmup", action="store_true", help="do not load the model before serving")
    add_store_args(p)
    p.add_argument("--device", help="auto, cpu, cuda (env VSEARCH_DEVICE)")
    p.set_defaults(handler=run)


def _options_class() -> type:
    from ui.service import UiOptions

    return UiOptions


def options_from(args: argparse.Namespace, env: Mapping[str, str] | None = None):  # noqa: ANN201
    """UiOptions from flags, then VSEARCH_* variables, then defaults (declared in UiOptions)."""
    cls = _options_class()
    values = from_env(cls, os.environ if env is None else env, ENV_PREFIX)
    return cls(**{**values, **given(cls, args)})


def run(args: argparse.Namespace) -> int:
    options = options_from(args)
    settings = settings_from(args)
    # before Gradio is imported: no usage statistics, no hub telemetry
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    from ui.server import serve

    serve(settings, options, warm=not args.no_warmup, announce=lambda line: print(line, flush=True))
    return 0
