"""How one indexing run treats the catalog: declared once, offered as ``vsearch index`` flags.

Kept free of heavy imports (no torch, no pymilvus) so the CLI can build its flags from it.
"""

from __future__ import annotations

from dataclasses import dataclass

from search.options import option

from .shard import Shard
from .tuning import Tuning


@dataclass(frozen=True)
class IndexOptions:
    """How one run treats the catalog; ``vsearch index`` offers each field as a flag."""

    id_column: str | None = option(None, "manifest id column (default: id, sku or product_id)")
    image_column: str | None = option(
        None, "manifest image column (default: image, image_path, path, image_url, url)"
    )
    new_version: bool = option(
        False, "with a different model, build a new collection version beside the live one"
    )
    force_delete: bool = option(False, "allow deleting most of the collection")
    dry_run: bool = option(False, "report what would change; write nothing")
    shard: Shard | None = option(
        None,
        "index only shard K of N (stable hash of the id); deletes only within it. Run "
        "K=1..N on N machines to split one catalog",
        metavar="K/N",
        parse=Shard.parse,
    )
    tuning: Tuning | None = None  # explicit pipeline tuning (benchmarks); None: per device
