"""Diff a catalog against the store: what to embed, what to re-tag, what to delete."""

from __future__ import annotations

from dataclasses import dataclass, field

from search.errors import ImageError, SafetyRefusal
from search.types import StoredRow

from .catalog import CatalogItem
from .fetch import read_image_bytes
from .hashing import content_hash, file_signature, meta_hash


@dataclass
class Job:
    item: CatalogItem
    meta_hash: str
    source_sig: str
    known_hash: str = ""  # set when the content was hashed during planning
    is_new: bool = True
    meta_changed: bool = True


@dataclass
class Plan:
    embed: list[Job] = field(default_factory=list)  # new or changed images
    retag: list[Job] = field(default_factory=list)  # same image, new metadata or signature
    unchanged: int = 0
    delete: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)


def make_plan(items: list[CatalogItem], stored: dict[str, StoredRow]) -> Plan:
    plan = Plan()
    for item in items:
        sig = "" if item.is_url else file_signature(item.image)
        job = Job(item, meta_hash(item.image, item.metadata), sig)
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
            job.known_hash = content_hash(read_image_bytes(item.image))
        except ImageError as exc:
            plan.failed.append((item.id, str(exc)))
            continue
        if job.known_hash == old.content_hash:
            plan.retag.append(job)  # touched but identical bytes: no re-embedding
            continue
        plan.embed.append(job)
    ids = {item.id for item in items}
    plan.delete = [i for i in stored if i not in ids]
    return plan


def guard_deletions(
    plan: Plan, stored_count: int, seen: int, max_fraction: float, force: bool
) -> None:
    """Refuse to empty the collection because the source is empty or unmounted."""
    if force or not plan.delete:
        return
    if seen == 0:
        raise SafetyRefusal(
            f"the catalog is empty but the collection holds {stored_count} items; refusing to "
            "delete them all (is the source unmounted?). Re-run with --force-delete if intended"
        )
    if len(plan.delete) > max_fraction * stored_count:
        raise SafetyRefusal(
            f"this run would delete {len(plan.delete)} of {stored_count} items "
            f"(more than {max_fraction:.0%}); refusing. Re-run with --force-delete if intended"
        )
