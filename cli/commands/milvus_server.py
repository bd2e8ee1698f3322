"""``vsearch milvus-server``: share one Milvus Lite database between processes."""

from __future__ import annotations

import argparse
import sys

from ..main import EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "milvus-server",
        help="serve a Milvus Lite database so a cron indexer and the UI can share it",
        description="Run Milvus Lite's server mode in the foreground. Milvus Lite allows one "
        "process per database; with this server running, set VSEARCH_URI=http://HOST:PORT in "
        "every process (vsearch serve, vsearch index from cron). Stop it with Ctrl-C or SIGTERM.",
    )
    p.add_argument(
        "--data-dir",
        help="the Lite database (a directory ending in .db; default: VSEARCH_URI when it is a "
        "path, else ./data/vsearch.db)",
    )
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=19541, help="port (default 19541)")
    p.add_argument("--max-workers", type=int, default=10, help="gRPC worker threads")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from cli.lite_server import lite_uri, run_lite_server
    from search.config import Settings

    data_dir = args.data_dir
    if not data_dir:
        settings = Settings.from_env()
        data_dir = settings.store.uri if settings.store.is_lite else Settings().store.uri
    print(
        f"vsearch: serving {data_dir}; in every process set VSEARCH_URI="
        f"{lite_uri(args.host, args.port)}",
        file=sys.stderr,
        flush=True,
    )
    run_lite_server(data_dir, host=args.host, port=args.port, max_workers=args.max_workers)
    return EXIT_OK
