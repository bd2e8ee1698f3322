"""Disjoint shards of one catalog, so several machines can index it into one collection.

``--shard K/N`` keeps the items whose stable hash of the id, modulo N, is K-1. The hash is
BLAKE2b of the UTF-8 id (never Python's per-process ``hash``), so every machine and every
night agrees on who owns an item. A sharded run diffs and deletes only within its shard: it
can never delete an item that belongs to another shard.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from search.errors import ConfigError

_SPEC = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (1-based) of ``count``."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 1 <= self.index <= self.count:
            raise ConfigError(f"shard {self.index}/{self.count}: K must be between 1 and N")

    @classmethod
    def parse(cls, spec: str) -> Shard:
        """``"2/4"`` -> Shard(2, 4)."""
        match = _SPEC.match(spec or "")
        if not match:
            raise ConfigError(f"--shard {spec!r}: expected K/N, e.g. 2/4")
        return cls(int(match.group(1)), int(match.group(2)))

    def owns(self, item_id: str) -> bool:
        """Whether ``item_id`` belongs to this shard."""
        return shard_of(item_id, self.count) == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def shard_of(item_id: str, count: int) -> int:
    """The 1-based shard that owns ``item_id`` among ``count`` shards."""
    digest = hashlib.blake2b(item_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count + 1
