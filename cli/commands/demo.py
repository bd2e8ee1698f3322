"""``vsearch demo``: the main job on the embedded default, end to end, offline."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..main import EXIT_OK, EXIT_PARTIAL, add_store_args, settings_from
from .output import print_matches, progress_reporter


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="generate a sample catalog of real photos, index it with the offline model, search it",
    )
    p.add_argument(
        "--catalog", default="./data/sample-catalog", help="where to write the sample catalog"
    )
    add_store_args(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from cli.sample import make_sample_catalog
    from indexer.pipeline import run_index
    from search import Searcher

    settings = settings_from(args)
    manifest = make_sample_catalog(args.catalog)
    print(f"sample catalog: {manifest}")
    progress, close = progress_reporter(not args.quiet, "indexing")
    try:
        report = run_index(manifest, settings, progress=progress)
    finally:
        close()
    print(report.summary())
    query = Path(args.catalog) / "images" / "chelsea-3.jpg"
    print(f"\nquery: {query} (a mirrored shot of product P001)")
    print_matches(Searcher(settings).similar(query, limit=5))
    print("\nmore like SKU-003-1 (espresso cup), only category=kitchen|animals:")
    print_matches(
        Searcher(settings).similar_by_id(
            "SKU-003-1", limit=3, filters={"category": ["kitchen", "animals"]}
        )
    )
    return EXIT_OK if report.ok else EXIT_PARTIAL
