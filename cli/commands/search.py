"""``vsearch search``: query the live collection by photo, id or text."""

from __future__ import annotations

import argparse
from pathlib import Path

from search import Embedder, Searcher
from search.config import Settings
from search.errors import ConfigError, ImageError
from search.filters import parse_filter_args
from search.images import open_image
from search.searcher import MAX_LIMIT, MAX_OFFSET

from ..main import add_model_args, add_store_args, settings_from
from .output import print_json, print_matches

CHECK_DRAFT = 224  # the smallest JPEG scale any model input needs: every block still decodes


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


def check_query(args: argparse.Namespace, settings: Settings) -> bytes | None:
    """Validate the query before anything heavy loads; return the decoded query photo.

    Opening the store and loading the model take seconds: a missing or unreadable photo, an
    empty id or text, or bad paging must fail at once, naming what is wrong (exit code 2).
    The photo is checked by decoding it whole (a truncated or corrupt file fails here), at
    the JPEG draft scale the model needs (a phone photo in ~1/5 of the time of a full
    decode); its bytes go to the searcher, which decodes them at its own scale.
    """
    given = [x for x in (args.image, args.item_id, args.text) if x is not None]
    if len(given) != 1:
        raise ConfigError("give exactly one query: IMAGE, --id ID or --text TEXT")
    if not given[0].strip():
        raise ConfigError("the query is empty: give an image path, an item id or a text")
    if not 1 <= args.limit <= MAX_LIMIT:
        raise ConfigError(f"--limit must be between 1 and {MAX_LIMIT}")
    if not 0 <= args.offset <= MAX_OFFSET:
        raise ConfigError(f"--offset must be between 0 and {MAX_OFFSET}")
    if args.image is None:
        return None
    try:
        open_image(
            args.image, max_pixels=settings.indexing.max_image_pixels, draft_size=CHECK_DRAFT
        )
        return Path(args.image).read_bytes()
    except OSError as exc:
        raise ImageError(f"query image {args.image}: cannot read file: {exc}") from exc
    except ImageError as exc:
        raise ImageError(f"query image {args.image}: {exc}") from exc


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    query_image = check_query(args, settings)
    filters = parse_filter_args(args.filter, settings.indexing.numeric_columns)
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
        matches = searcher.similar(query_image, **kw)
    if args.json:
        print_json([m.to_dict() for m in matches])
    else:
        print_matches(matches)
    return 0
