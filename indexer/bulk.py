"""``--write bulk``: vectors go to Parquet files (pymilvus's BulkWriter), then one bulk import.

For first loads and new collection versions on a Milvus server: rows are written to Parquet
in the folder the server's storage reads (``--bulk-dir``: its ``localStorage.path`` on a
standalone with local storage, or a mount of its MinIO/S3 bucket), the server imports them
as sealed segments and builds the index, instead of millions of upsert round trips through
the proxy, the message queue and the growing segments.

Bulk import *inserts*: an id already in the collection would be stored twice. The sink is
therefore refused for runs that change stored items (use ``--write upsert`` for cron runs);
a killed bulk run leaves no rows (nothing is imported before every file is written) or all
of them (the import is the server's job), so the next run's plan is still right.
Milvus Lite has no bulk import: refused with a clear message.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

from search.errors import ConfigError
from search.store import MilvusStore

from .plan import Job

log = logging.getLogger(__name__)

LITE_REFUSAL = (
    "--write bulk needs a Milvus server (standalone or distributed): Milvus Lite has no bulk "
    "import. Index with --write upsert (the default)"
)


def check_bulk(store: MilvusStore, jobs: list[Job], bulk_dir: str | None) -> None:
    """Refuse a bulk run that cannot work before anything is embedded."""
    if store.is_lite_engine():
        raise ConfigError(LITE_REFUSAL)
    if not bulk_dir:
        raise ConfigError(
            "--write bulk needs --bulk-dir: a folder the Milvus server reads as its storage "
            "(its localStorage.path for local storage, or a mount of its bucket)"
        )
    stored = sum(1 for j in jobs if not j.is_new)
    if stored:
        raise ConfigError(
            f"--write bulk inserts, and {stored} of the items to embed are already stored "
            "(they would be duplicated); bulk is for first loads and new versions "
            "(--new-version). Re-run with --write upsert"
        )


class BulkSink:
    """Collects rows into Parquet files (``put``/``close``), then imports them (``finish``)."""

    def __init__(self, store: MilvusStore, physical: str, bulk_dir: str) -> None:
        from pymilvus import CollectionSchema

        try:
            from pymilvus.bulk_writer import BulkFileType, LocalBulkWriter
        except ModuleNotFoundError as exc:  # the [bulk] extra is not installed
            raise ConfigError(
                f"--write bulk needs pymilvus's bulk writer ({exc}); "
                "install it with: pip install 'vsearch[bulk]'"
            ) from exc

        self.store, self.physical = store, physical
        desc = store._call("describe_collection", store.client.describe_collection, physical)
        Path(bulk_dir).mkdir(parents=True, exist_ok=True)
        self.writer = LocalBulkWriter(
            schema=CollectionSchema.construct_from_dict(desc),
            local_path=str(Path(bulk_dir).resolve()),
            file_type=BulkFileType.PARQUET,
        )
        self.rows = 0
        self.write_seconds = 0.0
        self.import_seconds = 0.0
        self._closed = False

    def put(self, rows: list[dict[str, Any]]) -> None:
        t0 = time.perf_counter()
        for row in rows:
            self.writer.append_row({**row, "vector": [float(x) for x in row["vector"]]})
        self.rows += len(rows)
        self.write_seconds += time.perf_counter() - t0

    def close(self) -> None:
        """Write the last buffered rows to Parquet (nothing is imported here)."""
        if not self._closed and self.rows:
            self.writer.commit()
        self._closed = True

    def finish(self) -> int:
        """Import every file, wait for the jobs and the index; remove the files."""
        self.close()
        if not self.rows:
            return 0
        files = self.writer.batch_files
        t0 = time.perf_counter()
        log.info("bulk import of %d rows (%d files) into %s", self.rows, len(files), self.physical)
        imported = self.store.bulk_import(self.physical, files)
        self.import_seconds = time.perf_counter() - t0
        folder = Path(self.writer.data_path)
        shutil.rmtree(folder, ignore_errors=True)
        return imported
