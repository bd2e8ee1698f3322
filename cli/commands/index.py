"""``vsearch index SOURCE``: embed a catalog into Milvus, incrementally."""

from __future__ import annotations

import argparse

from ..flags import add_flags, build
from ..main import (
    EXIT_OK,
    EXIT_PARTIAL,
    add_model_args,
    add_settings_args,
    add_store_args,
    settings_from,
)
from .output import print_json, progress_reporter


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "index",
        help="embed a catalog (folder, CSV or JSONL manifest) into Milvus; re-runs touch only changes",
        description="Embed every image of a catalog and upsert it into Milvus. A re-run embeds "
        "only new or changed images, deletes items that left the catalog and flushes.",
    )
    p.add_argument("source", help="a folder of images, or a .csv / .jsonl manifest")
    add_flags(p.add_argument_group("run"), _options_class())
    p.add_argument(
        "--allow-root",
        action="append",
        default=[],
        help="extra folder manifest paths may point into (repeatable)",
    )
    add_settings_args(p, "indexing")
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    add_store_args(p)
    add_model_args(p)
    p.set_defaults(handler=run)


def _options_class() -> type:
    from indexer.options import IndexOptions

    return IndexOptions


def run(args: argparse.Namespace) -> int:
    from indexer.pipeline import run_index

    extra = {"allowed_roots": tuple(args.allow_root)} if args.allow_root else {}
    settings = settings_from(args, **extra)
    options = build(_options_class(), args)
    progress, close = progress_reporter(not args.quiet, "indexing")
    try:
        report = run_index(args.source, settings, options, progress=progress)
    finally:
        close()
    if args.json:
        print_json(report.to_dict())
    else:
        print(report.summary())
        for f in report.row_errors + report.failed:
            print(f"  failed: {f.id}: {f.reason}")
        if not report.live and not report.dry_run:
            print(f"  {report.collection} is not live yet: vsearch promote {report.collection}")
    return EXIT_OK if report.ok else EXIT_PARTIAL
