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
import contextlib
import dataclasses
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from search.config import ENV_PREFIX, SECTIONS, Settings
from search.errors import VSearchError

from .flags import add_flags

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, EXIT_LOCKED, EXIT_STORE, EXIT_REFUSED = 0, 1, 2, 3, 4, 5
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE
COMMAND_MODULES = (
    "demo",
    "index",
    "search",
    "collections",
    "serve",
    "evaluate",
    "finetune",
    "precision",
    "milvus_server",
    "settings",
)
CLI_SECTIONS = ("store", "model", "indexing")  # settings sections offered as flags
log = logging.getLogger("vsearch")


def settings_flags(section: str) -> tuple[str, ...]:
    """The settings a section offers as flags (its fields in search/config.py)."""
    return tuple(
        f.name for f in dataclasses.fields(SECTIONS[section]) if f.metadata.get("flag", True)
    )


def add_settings_args(
    p: argparse.ArgumentParser, section: str, *, skip: tuple[str, ...] = ()
) -> None:
    """Flags for one section of the settings, in an argument group titled by the section; a
    flag given beats its VSEARCH_ variable."""
    add_flags(
        p.add_argument_group(section),
        SECTIONS[section],
        only=tuple(n for n in settings_flags(section) if n not in skip),
        unset=True,
        env_prefix=ENV_PREFIX,
    )


def add_store_args(p: argparse.ArgumentParser) -> None:
    """Flags every command that talks to Milvus shares (env: VSEARCH_URI, ...)."""
    add_settings_args(p, "store")


def add_model_args(p: argparse.ArgumentParser) -> None:
    add_settings_args(p, "model")


def settings_from(
    args: argparse.Namespace, *, skip: tuple[str, ...] = (), **extra: object
) -> Settings:
    """Environment first, then the settings flags that were given (``skip``: flags of the
    same name that mean something else in this command); ``extra``: flat setting names."""
    names = [n for section in CLI_SECTIONS for n in settings_flags(section) if n not in skip]
    flags = {n: getattr(args, n, None) for n in names}
    return Settings.from_env(**flags, **extra)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vsearch",
        description="Visual similarity search for product catalogs (open_clip + Milvus).",
        epilog="Exit codes: 0 ok, 1 some items failed, 2 usage/config error, 3 lock held, "
        "4 Milvus unavailable, 5 refused destructive change, 141 the output's reader left.",
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
        "milvus_lite",
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
    except BrokenPipeError:
        # `vsearch ... --json | head`: the reader left. Not an error to report; the rest of
        # the output goes nowhere (Python's flush at exit would raise again), and the exit
        # code is the one a shell reports for a writer killed by SIGPIPE.
        with contextlib.suppress(OSError, ValueError):  # a stdout with no descriptor
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
