"""``vsearch collections`` and ``vsearch promote``: versions and the blue-green switch."""

from __future__ import annotations

import argparse

from search.types import CollectionInfo

from ..main import add_store_args, settings_from
from .output import print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "collections", help="list collection versions (model, dimension, count, live) or drop one"
    )
    p.add_argument("action", nargs="?", choices=["list", "drop"], default="list")
    p.add_argument("name", nargs="?", help="collection to drop")
    p.add_argument("--json", action="store_true")
    add_store_args(p)
    p.set_defaults(handler=run)
    register_promote(sub)


def run(args: argparse.Namespace) -> int:
    from search.errors import ConfigError
    from search.store import MilvusStore

    settings = settings_from(args)
    store = MilvusStore(settings)
    if args.action == "drop":
        from training.versions import drop_collection

        if not args.name:
            raise ConfigError("collections drop needs a collection name")
        drop_collection(store, settings.store.collection, args.name)
        print(f"dropped {args.name}")
        return 0
    infos = store.collections()
    if args.json:
        print_json([i.to_dict() for i in infos])
        return 0
    for info in infos:
        print(collection_line(info))
    return 0


def collection_line(info: CollectionInfo) -> str:
    """``LIVE`` for every collection an alias points to, with the alias names after it."""
    model = info.model.describe() if info.model else "(not a vsearch collection)"
    flag = "LIVE" if info.aliases else "    "
    names = f"  <- {', '.join(info.aliases)}" if info.aliases else ""
    return f"{flag}  {info.name:40s} {info.count:>9d} items  {model}{names}"


def register_promote(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "promote",
        help="make a collection version live (one atomic alias switch)",
        description="Make a collection version live. It must hold the live version's items "
        "as they are now: a version that lacks items, still holds items deleted since it was "
        "built, or holds older titles, prices or images is refused, and the message names "
        "the `vsearch index` command that brings it up to date.",
    )
    p.add_argument("name", help="physical collection to make live (see vsearch collections)")
    p.add_argument(
        "--force",
        action="store_true",
        help="promote even if the version differs from the live one (missing, deleted or "
        "changed items)",
    )
    p.add_argument(
        "--allow-worse",
        action="store_true",
        help="promote a fine-tuned model even though its report says it is worse than its base",
    )
    add_store_args(p)
    p.set_defaults(handler=run_promote)


def run_promote(args: argparse.Namespace) -> int:
    from search.store import MilvusStore
    from training.versions import promote

    settings = settings_from(args)
    result = promote(
        MilvusStore(settings),
        settings.store.collection,
        args.name,
        force=args.force,
        allow_worse=args.allow_worse,
    )
    print(f"{result.alias} -> {result.current} ({result.count} items; was {result.previous})")
    return 0
