"""The summary of an indexing run (printed by the CLI, ``--json`` for cron)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Failure:
    id: str
    reason: str


@dataclass
class IndexReport:
    collection: str = ""
    alias: str = ""
    live: bool = False
    seen: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    # of the unchanged: rows rewritten only to record a new file signature (same bytes, same
    # metadata, e.g. a file copied again); counted so the summary says they were touched
    refreshed: int = 0
    deleted: int = 0
    embedded: int = 0
    failed: list[Failure] = field(default_factory=list)
    row_errors: list[Failure] = field(default_factory=list)
    count: int = 0
    seconds: float = 0.0
    embed_seconds: float = 0.0
    dry_run: bool = False
    refused: str = ""  # dry run: why the deletion guard would refuse the real run

    @property
    def images_per_second(self) -> float:
        return self.embedded / self.embed_seconds if self.embed_seconds > 0 else 0.0

    @property
    def ok(self) -> bool:
        return not self.failed and not self.row_errors

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["failed_count"] = len(self.failed) + len(self.row_errors)
        data["images_per_second"] = round(self.images_per_second, 2)
        return data

    def summary(self) -> str:
        failed = len(self.failed) + len(self.row_errors)
        if self.dry_run:
            return self._plan_summary(failed)
        refreshed = (
            f" ({self.refreshed} rewritten: same bytes, new file time)" if self.refreshed else ""
        )
        rate = (
            f"{self.images_per_second:.1f} images/s ({self.embedded} embedded in "
            f"{self.embed_seconds:.1f}s, run {self.seconds:.1f}s)"
            if self.embedded
            else f"nothing to embed (run {self.seconds:.1f}s)"
        )
        return (
            f"{self.collection}: seen {self.seen}, added {self.added}, updated {self.updated}, "
            f"unchanged {self.unchanged}{refreshed}, deleted {self.deleted}, failed {failed}; "
            f"{self.count} items; {rate}"
        )

    def _plan_summary(self, failed: int) -> str:
        refreshed = f" ({self.refreshed} to rewrite: new file time)" if self.refreshed else ""
        text = (
            f"dry run, nothing written: {self.collection} ({self.count} items now): "
            f"seen {self.seen}, would add {self.added}, update {self.updated}, "
            f"delete {self.deleted}; unchanged {self.unchanged}{refreshed}, failed {failed}"
        )
        if self.refused:
            text += f"\n  the deletion guard would refuse this run: {self.refused}"
        return text
