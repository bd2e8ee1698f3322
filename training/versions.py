"""Blue-green collection versions: promote one behind the alias, drop old ones."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from indexer.lock import IndexLock
from search.embedder import ModelInfo
from search.errors import CollectionNotFound, SafetyRefusal
from search.model_folder import finetune_block
from search.store import MilvusStore
from search.types import StoredRow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Promotion:
    alias: str
    previous: str | None
    current: str
    count: int


def promote(
    store: MilvusStore, alias: str, name: str, *, force: bool = False, allow_worse: bool = False
) -> Promotion:
    """Point ``alias`` at ``name`` after checking it holds exactly the live version's items.

    Refused (:class:`SafetyRefusal`) unless ``force``: items of the live version missing from
    ``name``; items ``name`` holds that the live version no longer has (deleted from the
    catalog since ``name`` was built: promoting would bring them back); items whose image or
    metadata differ (a title or price changed since). The message names the one command
    that brings ``name`` up to date (:func:`catch_up_command`).

    A collection built with a fine-tuned model whose report says it scored worse than its
    base (``vsearch finetune``'s ``improved: false``) is refused unless ``allow_worse``.

    The check and the switch run under the alias's index lock, so a sync of the live
    version cannot slip in between. The switch is one ``alter_alias``: searches running
    meanwhile answer from the old or the new collection, never from neither. The old
    collection stays until dropped.
    """
    if not store.exists(name):
        raise CollectionNotFound(f"collection {name!r} does not exist")
    model = store.provenance(name)
    if model is None:
        raise SafetyRefusal(f"{name!r} was not built by vsearch; refusing to promote it")
    verdict = finetune_verdict(model.name)
    if verdict is not None and verdict.get("improved") is False and not allow_worse:
        raise SafetyRefusal(
            f"{name!r} was built with a fine-tuned model that did not score better than its "
            f"base (worse or equal; {model.name}, strategy {verdict.get('strategy')}); use "
            "--allow-worse to promote it anyway"
        )
    with IndexLock(store.settings.replace(collection=alias)):
        previous = store.resolve(alias)
        if previous == alias:
            raise SafetyRefusal(f"{alias!r} is a collection, not an alias; cannot switch it")
        new_rows = store.fingerprints(name)
        if not new_rows and not force:
            raise SafetyRefusal(f"{name!r} is empty; refusing to promote it")
        if previous and previous != name and not force:
            behind = compare_versions(store.fingerprints(previous), new_rows)
            if behind:
                raise SafetyRefusal(
                    f"{name!r} does not match the live collection {previous!r}: {behind}. "
                    f"Bring it up to date with `{catch_up_command(name, model)}` "
                    "(the catalog the live version is synced from), then promote again; "
                    "or use --force"
                )
        store.flush(name)
        store.ensure_loaded(name)
        store.set_alias(alias, name)
    log.info("alias %s now points to %s (was %s)", alias, name, previous)
    return Promotion(alias, previous, name, len(new_rows))


def compare_versions(live: dict[str, StoredRow], new: dict[str, StoredRow]) -> str:
    """What ``new`` lacks, has extra or holds stale compared with ``live`` ('' when equal)."""
    missing = sorted(set(live) - set(new))
    extra = sorted(set(new) - set(live))
    stale = sorted(
        i
        for i in set(live) & set(new)
        if (live[i].content_hash, live[i].meta_hash) != (new[i].content_hash, new[i].meta_hash)
    )
    parts = []
    for ids, what in (
        (missing, "items of the live collection missing"),
        (extra, "items deleted from the live collection since the build"),
        (stale, "items whose image or metadata changed since the build"),
    ):
        if ids:
            parts.append(f"{len(ids)} {what} (e.g. {', '.join(ids[:5])})")
    return "; ".join(parts)


def catch_up_command(name: str, model: ModelInfo) -> str:
    """The command that syncs version ``name`` (built with ``model``) with the catalog.

    ``--collection`` names the physical collection itself, so the sync writes there and
    leaves the alias alone.
    """
    pretrained = f" --pretrained {model.pretrained}" if model.pretrained else ""
    return f"vsearch index CATALOG --collection {name} --model {model.name}{pretrained}"


def finetune_verdict(model_name: str) -> dict[str, Any] | None:
    """The ``vsearch`` block of a fine-tuned ``local-dir:`` model (None for other models)."""
    return finetune_block(model_name)


def drop_collection(store: MilvusStore, alias: str, name: str) -> None:
    """Drop a collection version; the live one (behind ``alias``) is refused."""
    if not store.exists(name):
        raise CollectionNotFound(f"collection {name!r} does not exist")
    if store.resolve(alias) == name or store.aliases(name):
        raise SafetyRefusal(
            f"{name!r} is live (aliases: {', '.join(store.aliases(name))}); promote another first"
        )
    store.drop(name)
