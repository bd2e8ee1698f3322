"""The Milvus store: owns the schema and every pymilvus call.

One code path for Milvus Lite (a local ``.db`` path, the default) and a Milvus server
(``http://host:19530`` plus token). Each physical collection records the provenance of the
model that filled it (see :mod:`search.schema`); an alias names the live collection, so a
model change is a blue-green switch (:meth:`MilvusStore.set_alias`).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import numpy as np

from .config import Settings
from .embedder import ModelInfo
from .errors import (
    CollectionNotFound,
    ProvenanceMismatch,
    StoreError,
    StoreLockedError,
    VSearchError,
)
from .filters import quote
from .lite_health import (
    LiteOpenFailure,
    capture_lite_open,
    check_lite_collection,
    check_lite_store,
    repair_hint,
    revive_lite_server,
    unreachable_port,
)
from .retry import retrying, short
from .schema import (
    FINGERPRINT_FIELDS,
    OUTPUT_FIELDS,
    PROVENANCE_KEY,
    build_schema,
    provenance_record,
    read_provenance,
    vector_index,
)
from .types import CollectionInfo, Match, StoredRow

log = logging.getLogger(__name__)
T = TypeVar("T")

LITE_LOCKED_HINT = (
    "the Milvus Lite database {uri} is held by another process (Lite allows one process per "
    "database). To share it, run `vsearch milvus-server --data-dir {uri}` as its only opener "
    "and set VSEARCH_URI=http://127.0.0.1:19541 in every other process (indexer, UI); if that "
    "server already runs, just set VSEARCH_URI. Or use Milvus standalone (docs/deployment.md)."
)


# pymilvus's channel pings its server every 10 s even with no call in flight. Milvus Lite's
# gRPC server (in this process, or `vsearch milvus-server`) keeps grpc's default policy (a
# ping without data at most every 5 minutes), so a client left idle for about a minute (a
# shop page between shoppers) gets GOAWAY "too_many_pings": the connection is dropped, grpc
# logs an ERROR line, and the next call waits for a reconnect. A server on this machine
# needs no pings to find a dead connection; a remote one keeps pymilvus's (a real Milvus
# permits them, and they keep a load balancer's idle connection open).
LOCAL_GRPC_OPTIONS = {
    "grpc.keepalive_permit_without_calls": False,
    "grpc.keepalive_time_ms": 300_000,
}


def _on_this_machine(uri: str) -> bool:
    """A server URI whose host is ``localhost`` or a loopback address (no name lookup)."""
    host = urlsplit(uri).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _AliasMiss(logging.Filter):
    """Drops pymilvus's ERROR record (with a traceback) for a ``describe_alias`` of a name
    that is no alias: that is how :meth:`MilvusStore.resolve` asks, and "no" is a normal
    answer (a first run, a collection named directly). Every other failed call is kept."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return not ("[describe_alias]" in text and "does not exist" in text)


def _hide_alias_misses() -> None:
    rpc_log = logging.getLogger("pymilvus.decorators")  # where pymilvus logs failed calls
    if not any(isinstance(f, _AliasMiss) for f in rpc_log.filters):
        rpc_log.addFilter(_AliasMiss())


class MilvusStore:
    """Schema, provenance, upserts, deletes, searches and aliases on one Milvus."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self._client: Any = None
        self._loaded: set[str] = set()
        self._engine: str | None = None

    # -- connection -------------------------------------------------------------------
    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self._connect()
        return self._client

    @property
    def _lite_path(self) -> Path:
        """The Lite database's real path: what milvus_lite keys its in-process server by."""
        return Path(self.settings.store.uri).expanduser().resolve()

    def _connect(self) -> Any:
        from pymilvus import MilvusClient

        _hide_alias_misses()

        uri = self.settings.store.uri
        if self.settings.store.is_lite:
            path = self._lite_path
            path.parent.mkdir(parents=True, exist_ok=True)
            uri = str(path)
            # Lite opens in process: a lock held by another process, or a damaged database,
            # will not go away by waiting; milvus_lite's own traceback is kept for -v only.
            # Its segment files are checked first: Lite reads them on open and logs a
            # traceback for a damaged one (even under --quiet) before failing.
            check_lite_store(uri)
            # a server of this process that stopped answering is started again first (a
            # client would wait its whole timeout on it), and once more if the new client
            # cannot get through to it all the same
            revive_lite_server(uri)
            for attempt in range(2):
                try:
                    with capture_lite_open() as failure:
                        return MilvusClient(
                            uri=uri,
                            token=self.settings.store.token or "",
                            timeout=30,
                            grpc_options=LOCAL_GRPC_OPTIONS,
                        )
                except Exception as exc:
                    failed = unreachable_port(exc)
                    if attempt or failure.error or failed is None:
                        raise self._lite_open_error(failure, exc) from exc
                    revive_lite_server(uri, failed_port=failed)
        # A server that is restarting gets the same bounded retries as any call.
        local = {"grpc_options": LOCAL_GRPC_OPTIONS} if _on_this_machine(uri) else {}
        try:
            for attempt in retrying(self.settings, "connect", log):
                with attempt:
                    return MilvusClient(
                        uri=uri, token=self.settings.store.token or "", timeout=30, **local
                    )
        except Exception as exc:
            raise StoreError(
                f"cannot connect to Milvus at {self.settings.store.uri}: {short(exc)}"
            ) from exc
        raise AssertionError("unreachable")

    def _lite_open_error(self, failure: LiteOpenFailure, exc: Exception) -> StoreError:
        if failure.locked:
            return StoreLockedError(LITE_LOCKED_HINT.format(uri=self.settings.store.uri))
        if failure.error is not None:
            return StoreError(
                f"the Milvus Lite database {self.settings.store.uri} cannot be opened "
                f"({failure.describe()}); {repair_hint(self.settings.store.uri)}"
            )
        return StoreError(f"cannot open Milvus Lite at {self.settings.store.uri}: {short(exc)}")

    def is_lite_engine(self) -> bool:
        """Whether the store is Milvus Lite (embedded, or its server): filters run in Python,
        one row at a time, so their cost grows with rows x clauses."""
        if self.settings.store.is_lite:
            return True
        if self._engine is None:
            try:
                version = str(self.client.get_server_version())
            except Exception:  # noqa: BLE001 - unknown engine: assume a real Milvus
                version = ""
            self._engine = version
        return self._engine.startswith("milvus_lite")

    def close(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            finally:
                self._client = None
                self._loaded.clear()

    def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a pymilvus call with bounded retries and backoff; raise StoreError at the end.

        Retried: failures that say, by type or code, that the server is unreachable or
        not ready (:func:`search.retry.transient`); anything else fails at once. On Milvus
        Lite a client method that could not get through runs once more on a new client,
        after this process's server for the database was started again if it was the one
        that failed (:func:`.lite_health.revive_lite_server`).
        """
        client = self._client
        try:
            return self._attempts(what, fn, *args, **kwargs)
        except StoreError as exc:
            bound = client is not None and getattr(fn, "__self__", None) is client
            failed = unreachable_port(exc.__cause__)
            if not (self.settings.store.is_lite and bound and failed is not None):
                raise
            revive_lite_server(str(self._lite_path), failed_port=failed)
            self.close()
            return self._attempts(what, getattr(self.client, fn.__name__), *args, **kwargs)

    def _attempts(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        try:
            for attempt in retrying(self.settings, what, log):
                with attempt:
                    return fn(*args, **kwargs)
        except VSearchError:
            raise
        except Exception as exc:
            if self.settings.store.is_lite:  # a damaged file is named with its repair, not echoed
                check_lite_store(self.settings.store.uri)
            raise StoreError(f"Milvus {what} failed: {short(exc)}") from exc
        raise AssertionError("unreachable")

    # -- collections ------------------------------------------------------------------
    def exists(self, name: str) -> bool:
        return bool(self._call("has_collection", self.client.has_collection, name))

    def resolve(self, name: str) -> str | None:
        """The physical collection behind ``name`` (an alias or a collection), or None."""
        # Connect outside the try: a held Lite database or an unreachable server must raise
        # once, not be swallowed here and tried again by exists().
        client = self.client
        try:
            desc = client.describe_alias(name)
            target = desc.get("collection_name") if isinstance(desc, dict) else None
            if target:
                return str(target)
        except Exception:
            pass
        return name if self.exists(name) else None

    def require(self, name: str) -> str:
        physical = self.resolve(name)
        if physical is not None and physical != name and not self.exists(physical):
            raise StoreError(
                f"alias {name!r} points to {physical!r}, which is missing from "
                f"{self.settings.store.uri}; {repair_hint(self.settings.store.uri)}"
            )
        if physical is None:
            raise CollectionNotFound(
                f"collection {name!r} does not exist at {self.settings.store.uri}; "
                "index a catalog first (vsearch index SOURCE)"
            )
        return physical

    def create(self, name: str, model: ModelInfo) -> None:
        record = provenance_record(model, self.settings.store.metric)
        schema = build_schema(model, record)
        index = vector_index(self.client, self.settings)
        self._call(
            "create_collection",
            self.client.create_collection,
            name,
            schema=schema,
            consistency_level="Strong",
        )
        # A new collection is empty: its index has nothing to build. pymilvus's create_index
        # waits for the build by default, and sleeps 0.5 s before its first look.
        self._call("create_index", self.client.create_index, name, index, sync=False)
        self._call("load_collection", self.client.load_collection, name)
        self._call(
            "alter_collection_properties",
            self.client.alter_collection_properties,
            name,
            properties={PROVENANCE_KEY: record},
        )
        self._loaded.add(name)
        log.info("created collection %s for %s", name, model.describe())

    def provenance(self, name: str) -> ModelInfo | None:
        """The model recorded on a physical collection (None if it has no vsearch record)."""
        desc = self._call("describe_collection", self.client.describe_collection, name)
        return read_provenance(name, desc)

    def properties(self, name: str) -> dict[str, str]:
        """The collection's properties (small records such as the score calibration)."""
        desc = self._call("describe_collection", self.client.describe_collection, name)
        return {str(k): str(v) for k, v in (desc.get("properties") or {}).items()}

    def set_properties(self, name: str, properties: dict[str, str]) -> None:
        self._call(
            "alter_collection_properties",
            self.client.alter_collection_properties,
            name,
            properties=properties,
        )

    def check_model(self, name: str, model: ModelInfo) -> None:
        """Refuse to touch a collection built by another model (or not by vsearch at all)."""
        recorded = self.provenance(name)
        if recorded is None:
            raise ProvenanceMismatch(
                f"collection {name!r} was not created by vsearch (no provenance); refusing to use it"
            )
        if recorded.key != model.key:
            raise ProvenanceMismatch(
                f"collection {name!r} was built with model {recorded.describe()}, but the model in "
                f"use is {model.describe()}. Use the collection's own model, or index into a new "
                "collection version (vsearch index --new-version) and promote it"
            )

    def ensure_loaded(self, name: str) -> None:
        if name in self._loaded:
            return
        if self.settings.store.is_lite:  # a damaged embedded store must not read as empty
            check_lite_collection(self.settings.store.uri, name)
        self._call("load_collection", self.client.load_collection, name)
        self._loaded.add(name)

    def count(self, name: str) -> int:
        self.ensure_loaded(name)
        res = self._call("count", self.client.query, name, filter="", output_fields=["count(*)"])
        return int(res[0]["count(*)"]) if res else 0

    def flush(self, name: str) -> None:
        self._call("flush", self.client.flush, name)

    def drop(self, name: str) -> None:
        self._call("drop_collection", self.client.drop_collection, name)
        self._loaded.discard(name)

    def aliases(self, name: str) -> tuple[str, ...]:
        res = self._call("list_aliases", self.client.list_aliases, collection_name=name)
        return tuple(res.get("aliases", []) if isinstance(res, dict) else res)

    def set_alias(self, alias: str, collection: str) -> None:
        """Point ``alias`` at ``collection`` atomically (create it if needed)."""
        try:
            current = self.client.describe_alias(alias).get("collection_name")
        except Exception:
            current = None
        if current is None:
            try:
                self._call("create_alias", self.client.create_alias, collection, alias)
            except StoreError:
                # a parallel run (another shard) may have created it meanwhile
                try:
                    current = self.client.describe_alias(alias).get("collection_name")
                except Exception:
                    current = None
                if current != collection:
                    raise
        elif current != collection:
            self._call("alter_alias", self.client.alter_alias, collection, alias)

    def collections(self) -> list[CollectionInfo]:
        out = []
        for name in sorted(self._call("list_collections", self.client.list_collections)):
            try:
                model = self.provenance(name)
            except ProvenanceMismatch:
                model = None
            out.append(CollectionInfo(name, model, self.count(name), self.aliases(name)))
        return out

    # -- rows -------------------------------------------------------------------------
    def upsert(self, name: str, rows: Sequence[dict[str, Any]]) -> int:
        """Upsert rows in chunks sized well under Milvus's request limit."""
        done = 0
        for chunk in _chunks_by_bytes(rows, self.settings.store.upsert_bytes):
            self._call("upsert", self.client.upsert, name, chunk)
            done += len(chunk)
        return done

    def delete(self, name: str, ids: Iterable[str]) -> int:
        ids = list(ids)
        for start in range(0, len(ids), 500):
            batch = ids[start : start + 500]
            expr = f"id in [{', '.join(quote(str(i)) for i in batch)}]"
            self._call("delete", self.client.delete, name, filter=expr)
        return len(ids)

    def fingerprints(self, name: str) -> dict[str, StoredRow]:
        """Every stored id with its hashes, streamed with a query iterator."""
        self.ensure_loaded(name)
        it = self._call(
            "query_iterator",
            self.client.query_iterator,
            name,
            batch_size=2000,
            filter="",
            output_fields=FINGERPRINT_FIELDS,
        )
        out: dict[str, StoredRow] = {}
        try:
            while True:
                batch = self._call("query_iterator.next", it.next)
                if not batch:
                    break
                for r in batch:
                    out[r["id"]] = StoredRow(
                        r["id"], r["content_hash"], r["meta_hash"], r["source_sig"]
                    )
        finally:
            it.close()
        return out

    def get(self, name: str, ids: Sequence[str], *, vectors: bool = False) -> list[dict[str, Any]]:
        """Rows by id, in the order asked, skipping ids that do not exist."""
        if not ids:
            return []
        self.ensure_loaded(name)
        fields = OUTPUT_FIELDS + FINGERPRINT_FIELDS[1:] + (["vector"] if vectors else [])
        # pymilvus's get() pastes ids into an expression unescaped (an id with ' or \ breaks
        # it); query with properly quoted literals instead.
        expr = f"id in [{', '.join(quote(str(i)) for i in ids)}]"
        rows = self._call("get", self.client.query, name, filter=expr, output_fields=fields)
        by_id = {r["id"]: dict(r) for r in rows}
        return [by_id[i] for i in ids if i in by_id]

    def search(
        self,
        name: str,
        vectors: np.ndarray,
        *,
        limit: int,
        offset: int = 0,
        filter: str = "",
    ) -> list[list[Match]]:
        self.ensure_loaded(name)
        params: dict[str, Any] = {"metric_type": self.settings.store.metric, "params": {}}
        if self.settings.store.index_type.startswith("HNSW"):
            params["params"]["ef"] = max(self.settings.store.search_ef, limit + offset)
        res = self._call(
            "search",
            self.client.search,
            name,
            data=[v.tolist() for v in np.asarray(vectors, np.float32)],
            limit=limit,
            offset=offset,
            filter=filter,
            output_fields=OUTPUT_FIELDS,
            search_params=params,
            consistency_level=self.settings.store.search_consistency,
        )
        return [[_to_match(hit) for hit in hits] for hits in res]

    def distinct(self, name: str, key: str, *, limit: int = 200, scan: int = 16384) -> list[Any]:
        """Distinct values of a metadata key (for UI filters), sampled over up to ``scan`` rows."""
        self.ensure_loaded(name)
        rows = self._call(
            "query", self.client.query, name, filter="", output_fields=["metadata"], limit=scan
        )
        values = {r["metadata"].get(key) for r in rows if isinstance(r.get("metadata"), dict)}
        values.discard(None)
        return sorted(values, key=lambda v: (str(type(v)), v))[:limit]

    def metadata_fields(self, name: str, *, scan: int = 16384) -> dict[str, str]:
        """Metadata keys of a collection and their kind: "number", "text", "bool" or "mixed".

        Sampled over up to ``scan`` rows (what filters are checked against).
        """
        self.ensure_loaded(name)
        rows = self._call(
            "query", self.client.query, name, filter="", output_fields=["metadata"], limit=scan
        )
        kinds: dict[str, set[str]] = {}
        for r in rows:
            meta = r.get("metadata")
            if isinstance(meta, dict):
                for key, value in meta.items():
                    if value is None:
                        continue
                    kinds.setdefault(key, set()).add(_kind(value))
        return {k: (v.pop() if len(v) == 1 else "mixed") for k, v in kinds.items()}

    # -- bulk import (issue 16): files the server's own storage reads -----------------
    def bulk_import(
        self, name: str, files: Sequence[Sequence[str]], *, timeout: float = 3600.0
    ) -> int:
        """Import groups of Parquet files (one server job each), wait for every job, then
        for the vector index; return the rows imported. Milvus Lite has no bulk import."""
        import time

        if self.is_lite_engine():
            raise StoreError(
                "bulk import needs a Milvus server (standalone or distributed); Milvus Lite "
                "has no bulk import: index with --write upsert"
            )
        conn = self.client._get_connection()  # the gRPC Import call (2.3 and later)
        before = self.count(name)
        tasks = [
            self._call("bulk_insert", conn.do_bulk_insert, name, "", list(group)) for group in files
        ]
        deadline, rows = time.monotonic() + timeout, 0
        for task in tasks:
            while True:
                state = self._call("bulk_insert_state", conn.get_bulk_insert_state, task)
                if state.state == state.ImportCompleted:
                    rows += int(state.row_count)
                    break
                if state.state in (state.ImportFailed, state.ImportFailedAndCleaned):
                    raise StoreError(f"bulk import into {name} failed: {state.failed_reason}")
                if time.monotonic() > deadline:
                    raise StoreError(f"bulk import into {name} still running after {timeout}s")
                time.sleep(0.5)
        for index in self._call("list_indexes", self.client.list_indexes, name):
            while True:
                desc = self._call("describe_index", self.client.describe_index, name, index)
                if int(desc.get("pending_index_rows", 0)) == 0 and desc.get("state") != "Failed":
                    break
                if time.monotonic() > deadline:
                    raise StoreError(f"index of {name} not built after {timeout}s")
                time.sleep(0.5)
        # 2.3 reports a job complete before the query nodes serve its segments
        while self.count(name) < before + rows:
            if time.monotonic() > deadline:
                raise StoreError(f"imported rows of {name} not served after {timeout}s")
            time.sleep(0.5)
        return rows


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return "text" if isinstance(value, str) else "other"


def _to_match(hit: Any) -> Match:
    entity = hit.get("entity", {})
    return Match(
        id=str(hit.get("id", entity.get("id"))),
        score=float(hit.get("distance", 0.0)),
        image=entity.get("image", ""),
        metadata=entity.get("metadata") or {},
    )


def _row_bytes(row: dict[str, Any]) -> int:
    vec = row.get("vector")
    size = 4 * len(vec) if vec is not None else 0
    return size + sum(len(str(v)) for k, v in row.items() if k != "vector") + 64


def _chunks_by_bytes(rows: Sequence[dict[str, Any]], budget: int) -> Iterable[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    size = 0
    for row in rows:
        rb = _row_bytes(row)
        if chunk and size + rb > budget:
            yield chunk
            chunk, size = [], 0
        chunk.append(row)
        size += rb
    if chunk:
        yield chunk
