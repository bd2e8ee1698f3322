"""Blue-green collection versions: promote one behind the alias, drop old ones."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from search.errors import CollectionNotFound, SafetyRefusal
from search.model_folder import finetune_block
from search.store import MilvusStore

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
    """Point ``alias`` at ``name`` after checking it holds every item of the live version.

    A collection built with a fine-tuned model whose report says it scored worse than its
    base (``vsearch finetune``'s ``improved: false``) is refused unless ``allow_worse``.

    The switch is one ``alter_alias``: searches running meanwhile answer from the old or
    the new collection, never from neither. The old collection stays until dropped.
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
    previous = store.resolve(alias)
    if previous == alias:
        raise SafetyRefusal(f"{alias!r} is a collection, not an alias; cannot switch it")
    new_ids = set(store.fingerprints(name))
    if not new_ids and not force:
        raise SafetyRefusal(f"{name!r} is empty; refusing to promote it")
    if previous and previous != name and not force:
        missing = set(store.fingerprints(previous)) - new_ids
        if missing:
            sample = ", ".join(sorted(missing)[:5])
            raise SafetyRefusal(
                f"{name!r} lacks {len(missing)} items of the live collection {previous!r} "
                f"(e.g. {sample}); finish indexing it first, or use --force"
            )
    store.flush(name)
    store.ensure_loaded(name)
    store.set_alias(alias, name)
    log.info("alias %s now points to %s (was %s)", alias, name, previous)
    return Promotion(alias, previous, name, len(new_ids))


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
