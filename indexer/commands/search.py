"""``vsearch search``: query the live collection by photo, id or text."""

from __future__ import annotations

import argparse

from search.errors import ConfigError

from ..cli import add_model_args, add_store_args, settings_from
from .output import print_json, print_matches


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="find catalog items similar to a photo, an item id or a text")
    p.add_argument("image", nargs="?", help="query photo (path)")
    p.add_argument("--id", dest="item_id", help="'more like this': neighbours of a catalog item")
    p.add_argument("--text", help="text query (models with a text tower only)")
    p.add_argument("-k", "--limit", type=int, default=10, help="results per page (default 10)")
    p.add_argument("--offset", type=int, default=0, help="skip this many results (paging)")
    p.add_argument(
        "-f",
        "--filter",
        action="append",
        default=[],
        metavar="EXPR",
        help="metadata filter: key=value, key=a|b, key>=n, key<n (repeatable)",
    )
    p.add_argument("--min-score", type=float, help="drop results below this similarity")
    p.add_argument("--json", action="store_true", help="print results as JSON")
    add_store_args(p)
    add_model_args(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from search import Embedder, Searcher
    from search.filters import parse_filter_args

    given = [x for x in (args.image, args.item_id, args.text) if x]
    if len(given) != 1:
        raise ConfigError("give exactly one query: IMAGE, --id ID or --text TEXT")
    settings = settings_from(args)
    filters = parse_filter_args(args.filter, settings.numeric_columns)
    embedder = Embedder.from_settings(settings) if args.model else None
    searcher = Searcher(settings, embedder=embedder)
    kw = {
        "limit": args.limit,
        "offset": args.offset,
        "filters": filters,
        "min_score": args.min_score,
    }
    if args.item_id:
        matches = searcher.similar_by_id(args.item_id, **kw)
    elif args.text:
        matches = searcher.similar_text(args.text, **kw)
    else:
        matches = searcher.similar(args.image, **kw)
    if args.json:
        print_json([m.to_dict() for m in matches])
    else:
        print_matches(matches)
    return 0
