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
    engine: str = option(
        "local",
        "where images are decoded and embedded: local (this process and its loader workers) "
        "or ray (a Ray Dataset: CPU decode tasks, an embedding actor pool, one per GPU; "
        'pip install "vsearch[ray]")',
        choices=("local", "ray"),
    )
    ray_address: str | None = option(
        None,
        "with --engine ray: the cluster to join (ray://host:10001 or auto); default a local "
        "Ray started in this process",
        metavar="ADDRESS",
    )
    write: str = option(
        "upsert",
        "how vectors reach Milvus: upsert (batches, any store) or bulk (Parquet files + a bulk "
        "import job, then the index; first loads and new versions on a Milvus server only)",
        choices=("upsert", "bulk"),
    )
    bulk_dir: str | None = option(
        None,
        "with --write bulk: the folder the Parquet files are written to; the Milvus server "
        "must read it as its storage (its localStorage path, or a mount of its bucket)",
        metavar="DIR",
    )
    tuning: Tuning | None = None  # explicit pipeline tuning (benchmarks); None: per device
