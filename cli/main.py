"""``vsearch``: one command-line program over the library.

Each subcommand lives in ``cli/commands/`` and is a thin shell over a library function.
This module owns logging, stdout and the mapping of errors to exit codes:

====  ==========================================================================
code  meaning
====  ==========================================================================
0     success
1     finished, but some images or manifest rows failed (see the summary)
2     usage, configuration or input error (bad flag, unknown collection, model
      mismatch, unreadable catalog)
3     another indexing run holds the lock on this collection
4     Milvus unavailable or failing (after retries), or a Lite database held by
      another process
5     refused a destructive change (e.g. deleting most of the collection)
130   interrupted
====  ==========================================================================
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from search.config import Settings
from search.errors import VSearchError

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, EXIT_LOCKED, EXIT_STORE, EXIT_REFUSED = 0, 1, 2, 3, 4, 5
COMMAND_MODULES = (
    "demo",
    "index",
    "search",
    "collections",
    "serve",
    "evaluate",
    "finetune",
    "milvus_server",
)
log = logging.getLogger("vsearch")


def add_store_args(p: argparse.ArgumentParser) -> None:
    """Flags every command that talks to Milvus shares (env: VSEARCH_URI, ...)."""
    g = p.add_argument_group("store")
    g.add_argument(
        "--uri", help="Milvus Lite path or server URI (env VSEARCH_URI; default ./data/vsearch.db)"
    )
    g.add_argument("--token", help="Milvus token, user:password (env VSEARCH_TOKEN)")
    g.add_argument(
        "--collection", help="collection alias (env VSEARCH_COLLECTION; default catalog)"
    )


def add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument(
        "--model",
        help="open_clip name, local-dir:PATH or builtin:efficientnet-lite0 (env VSEARCH_MODEL)",
    )
    g.add_argument(
        "--pretrained",
        help="open_clip pretrained tag, e.g. laion2b_s34b_b79k (env VSEARCH_PRETRAINED)",
    )
    g.add_argument("--device", help="auto, cpu, cuda, cuda:1 (env VSEARCH_DEVICE)")


def settings_from(args: argparse.Namespace, **extra: object) -> Settings:
    """Environment first, then flags that were given."""
    names = (
        "uri",
        "token",
        "collection",
        "model",
        "pretrained",
        "device",
        "batch_size",
        "workers",
        "threads",
    )
    flags = {n: getattr(args, n, None) for n in names}
    return Settings.from_env(**flags, **extra)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vsearch",
        description="Visual similarity search for product catalogs (open_clip + Milvus).",
        epilog="Exit codes: 0 ok, 1 some items failed, 2 usage/config error, 3 lock held, "
        "4 Milvus unavailable, 5 refused destructive change.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="only warnings and errors; no progress bar"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"cli.commands.{name}").register(sub)
    return parser


def configure_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # The program's own progress and summaries at INFO; libraries (open_clip logs on the root
    # logger, faiss, Lite) only warn unless -v. Never touch "root" by name: getLogger("root")
    # IS the root logger, and quieting it used to hide the indexer's progress lines too.
    for own in ("vsearch", "indexer", "training", "cli"):
        logging.getLogger(own).setLevel(level)
    for noisy in ("httpx", "urllib3", "PIL", "matplotlib"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    # pymilvus configures its own loggers when imported and logs every failed RPC with a
    # traceback; our errors already say it in one line. Import it first, then quiet it.
    import pymilvus  # noqa: F401

    # milvus_lite logs a 20-line traceback when another process holds the database; the store
    # turns that into StoreLockedError, whose one line says what to do.
    for name in (
        "pymilvus",
        "pymilvus.decorators",
        "pymilvus.milvus_client",
        "grpc",
        "grpc._server",
        "milvus_lite.server_manager",
    ):
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.CRITICAL)


def quiet_grpc(verbose: bool) -> None:
    """Keep gRPC's C core off stderr unless ``-v`` (or the user set GRPC_VERBOSITY).

    It writes there itself, past Python logging: a ``fork_posix.cc`` note each time a decode
    worker forks while Lite's in-process server holds gRPC threads, and ``GOAWAY ...
    too_many_pings`` when that server throttles the client's keepalive pings. Neither is an
    error; real failures come back as exceptions, which ``main`` prints as one line. gRPC
    reads the variable when it loads, so this runs before anything imports it; only the
    program's entry point sets it (the library never touches ``os.environ``).
    """
    if not verbose and "grpc" not in sys.modules:  # once loaded, the setting is moot
        os.environ.setdefault("GRPC_VERBOSITY", "NONE")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet_grpc(args.verbose)
    configure_logging(args.verbose, args.quiet)
    try:
        return int(args.handler(args) or EXIT_OK)
    except VSearchError as exc:
        print(f"vsearch: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("vsearch: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
