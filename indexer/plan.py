"""Diff a catalog against the store: what to embed, what to re-tag, what to delete."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from search.errors import ImageError
from search.types import StoredRow

from .catalog import CatalogItem
from .download import Fetched
from .fetch import read_image_bytes
from .hashing import content_hash, file_signature, meta_hash


@dataclass
class Job:
    item: CatalogItem
    meta_hash: str
    source_sig: str
    known_hash: str = ""  # set when the content was hashed during planning
    local: str = ""  # where a URL's bytes were downloaded to (the URL cache)
    is_new: bool = True
    meta_changed: bool = True


@dataclass
class Plan:
    embed: list[Job] = field(default_factory=list)  # new or changed images
    retag: list[Job] = field(default_factory=list)  # same image, new metadata or signature
    unchanged: int = 0
    delete: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)


def make_plan(
    items: list[CatalogItem],
    stored: dict[str, StoredRow],
    fetched: Mapping[str, Fetched] | None = None,
    *,
    keep: Collection[str] = (),
    may_delete: bool = True,
) -> Plan:
    """Diff ``items`` against ``stored``; URL items use their downloads in ``fetched``.

    A URL's signature is the hash of its bytes from the URL cache (a ``304`` keeps the
    cached bytes), so an unchanged URL is neither downloaded again nor re-embedded.
    keep: stored ids never deleted (rows that failed to parse); may_delete=False (a
    manifest read only in part) deletes nothing.
    """
    plan = Plan()
    fetched = fetched or {}
    for item in items:
        got = fetched.get(item.image) if item.is_url else None
        if got is not None and got.error:
            plan.failed.append((item.id, got.error))
            continue
        sig = got.signature if got else ("" if item.is_url else file_signature(item.image))
        job = Job(item, meta_hash(item.image, item.metadata), sig, local=got.path if got else "")
        old = stored.get(item.id)
        if old is None:
            plan.embed.append(job)
            continue
        job.is_new = False
        job.meta_changed = job.meta_hash != old.meta_hash
        if sig and sig == old.source_sig:
            if job.meta_hash == old.meta_hash:
                plan.unchanged += 1
            else:
                plan.retag.append(job)
            continue
        try:
            job.known_hash = got.content_hash if got else content_hash(read_image_bytes(item.image))
        except ImageError as exc:
            plan.failed.append((item.id, str(exc)))
            continue
        if job.known_hash == old.content_hash:
            plan.retag.append(job)  # touched but identical bytes: no re-embedding
            continue
        plan.embed.append(job)
    ids = {item.id for item in items} | set(keep)
    plan.delete = [i for i in stored if i not in ids] if may_delete else []
    return plan


def deletion_refusal(
    plan: Plan, stored_count: int, seen: int, max_fraction: float, alias: str = ""
) -> str:
    """Why the deletion guard refuses ``plan`` ('' when it lets it through).

    The usual cause of a mass deletion is not a catalog that shrank but another catalog
    pointed at the same collection, so the message names both ways out.
    """
    if not plan.delete:
        return ""
    if seen == 0:
        return (
            f"the catalog is empty but the collection holds {stored_count} items; refusing to "
            "delete them all (is the source unmounted?). Re-run with --force-delete if intended"
        )
    if len(plan.delete) > max_fraction * stored_count:
        where = f"collection {alias!r}" if alias else "the collection"
        return (
            f"this run would delete {len(plan.delete)} of {stored_count} items of {where} "
            f"(more than {max_fraction:.0%}); refusing. A different catalog goes in its own "
            "collection: add --collection NAME (env VSEARCH_COLLECTION). If these items really "
            "left the catalog, re-run with --force-delete"
        )
    return ""
