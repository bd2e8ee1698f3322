"""The indexing run: read the catalog, diff it, load -> embed -> upsert, delete, flush.

Decoding and preprocessing run in DataLoader workers; the model embeds batch after batch in
this process; a writer thread upserts finished batches into Milvus while the next batch
embeds (a bounded queue keeps memory flat whatever the catalog size). Every row carries its
content hash, so a re-run embeds only new or changed images, and a crash at any point is
repaired by the next run.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search.config import Settings
from search.embedder import Embedder, ModelInfo
from search.errors import ConfigError, ProvenanceMismatch, SafetyRefusal, StoreError
from search.images import Decoder, Preprocess
from search.store import MilvusStore

from .catalog import load_catalog
from .decoding import catalog_decoder
from .download import fetch_catalog_urls
from .engines import Embedded, Engine
from .lock import IndexLock
from .options import IndexOptions
from .plan import Job, Plan, deletion_refusal, make_plan
from .report import Failure, IndexReport
from .tuning import Tuning, choose

log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]


def target_collection(
    store: MilvusStore, alias: str, model: ModelInfo, new_version: bool, *, create: bool = True
) -> str:
    """The physical collection this model's vectors go to (created on first use).

    A live collection of the same model is reused; with another model the run is refused
    unless ``new_version`` asks to build a parallel collection for a blue-green switch.
    create=False (a dry run) only names it.
    """
    live = store.resolve(alias)
    versioned = f"{alias}__{model.slug}"
    if live is not None:
        recorded = store.provenance(live)
        if recorded is not None and recorded.key == model.key:
            return live
        if not new_version:
            store.check_model(live, model)  # raises with the full explanation
    if store.exists(versioned):
        store.check_model(versioned, model)
    elif create:
        store.create(versioned, model)
    return versioned


def run_index(
    source: str | Path,
    settings: Settings,
    options: IndexOptions | None = None,
    *,
    embedder: Embedder | None = None,
    store: MilvusStore | None = None,
    progress: Progress | None = None,
) -> IndexReport:
    """Bring the collection in line with the catalog at ``source``; return the summary."""
    options = options or IndexOptions()
    started = time.perf_counter()
    catalog = load_catalog(
        source,
        id_column=options.id_column,
        image_column=options.image_column,
        numeric_columns=settings.indexing.numeric_columns,
        allowed_roots=settings.indexing.allowed_roots,
    )
    if options.shard is not None:
        catalog.items = [i for i in catalog.items if options.shard.owns(i.id)]
    embedder = embedder or Embedder.from_settings(settings)
    store = store or MilvusStore(settings)
    report = IndexReport(
        alias=settings.store.collection, seen=len(catalog.items), dry_run=options.dry_run
    )
    report.row_errors = [Failure(e.where, e.reason) for e in catalog.errors]
    if options.write == "bulk" and store.is_lite_engine():
        from .bulk import LITE_REFUSAL

        raise ConfigError(LITE_REFUSAL)  # before a collection is created for nothing
    shard = options.shard
    # shards of one collection may run side by side on one machine: one lock per shard
    with IndexLock(
        settings.replace(collection=f"{settings.store.collection}#{shard}") if shard else settings
    ):
        physical = target_collection(
            store,
            settings.store.collection,
            embedder.info,
            options.new_version,
            create=not options.dry_run,
        )
        report.collection = physical
        exists = not options.dry_run or store.exists(physical)
        stored = store.fingerprints(physical) if exists else {}
        if shard is not None:  # never diff (hence never delete) another shard's items
            stored = {k: v for k, v in stored.items() if shard.owns(k)}
        urls = [i.image for i in catalog.items if i.is_url]
        fetched = fetch_catalog_urls(
            urls,
            settings.model.cache_dir,
            retries=settings.store.retries,
            backoff=settings.store.retry_backoff,
            allow_private=settings.indexing.allow_private_urls,
            max_pixels=settings.indexing.max_image_pixels,
        )
        plan = make_plan(
            catalog.items, stored, fetched, keep=catalog.protected_ids, may_delete=catalog.complete
        )
        refusal = _guard_deletions(plan, len(stored), len(catalog.items), settings, options)
        report.unchanged = plan.unchanged
        report.failed = [Failure(i, r) for i, r in plan.failed]
        log.info(
            "%s: %d items, %d to embed, %d to re-tag, %d unchanged, %d to delete",
            physical,
            len(catalog.items),
            len(plan.embed),
            len(plan.retag),
            plan.unchanged,
            len(plan.delete),
        )
        if options.dry_run:
            _report_plan(plan, report, refusal)
            report.live = exists and store.resolve(settings.store.collection) == physical
        else:
            run = _Run(
                settings,
                store,
                physical,
                embedder,
                options.tuning or choose(settings, embedder.device),
                report,
                progress,
            )
            _stage(run, options, plan)
            _apply(run, plan)
            _make_live_if_first(store, settings.store.collection, physical, report)
        report.count = store.count(physical) if exists else 0
    report.seconds = time.perf_counter() - started
    log.debug("%s", report.summary())  # the CLI prints it (once)
    return report


def _guard_deletions(
    plan: Plan, stored: int, seen: int, settings: Settings, options: IndexOptions
) -> str:
    """Raise :class:`SafetyRefusal` for a mass deletion; a dry run gets the reason back."""
    if options.force_delete:
        return ""
    reason = deletion_refusal(
        plan, stored, seen, settings.indexing.max_delete_fraction, settings.store.collection
    )
    if reason and not options.dry_run:
        raise SafetyRefusal(reason)
    return reason


def _report_plan(plan: Plan, report: IndexReport, refusal: str) -> None:
    """A dry run's report: what the run would add, update, re-tag and delete."""
    report.added = sum(1 for j in plan.embed if j.is_new)
    report.updated = len(plan.embed) - report.added + sum(1 for j in plan.retag if j.meta_changed)
    report.refreshed = sum(1 for j in plan.retag if not j.meta_changed)
    report.unchanged += report.refreshed
    report.deleted = len(plan.delete)
    report.refused = refusal


@dataclass
class _Run:
    """One indexing run past its plan: where rows go, how images embed, what is reported.

    engine: None runs the local DataLoader path; writer: None upserts (a writer thread, or
    in this thread without ``async_writes``).
    """

    settings: Settings
    store: MilvusStore
    physical: str
    embedder: Embedder
    tuning: Tuning
    report: IndexReport
    progress: Progress | None = None
    engine: Engine | None = None
    writer: Any = None


def _stage(run: _Run, options: IndexOptions, plan: Plan) -> None:
    """``--engine`` and ``--write``: checked before anything is embedded."""
    if options.write == "bulk":
        from .bulk import BulkSink, check_bulk

        check_bulk(run.store, plan.embed, options.bulk_dir)
        if plan.embed:
            run.writer = BulkSink(run.store, run.physical, str(options.bulk_dir))
    if options.engine == "ray" and plan.embed:
        from .engines.ray_engine import RayEngine, require_ray

        require_ray()
        run.engine = RayEngine(run.settings, run.embedder, run.tuning, address=options.ray_address)


def _apply(run: _Run, plan: Plan) -> None:
    """Embed and write the new and changed images, re-tag, delete, flush."""
    _embed_and_upsert(run, plan.embed)
    if run.writer is not None and hasattr(run.writer, "finish"):
        run.writer.finish()  # --write bulk: import the files, wait for the index
    _retag(plan.retag, run.store, run.physical, run.report)
    if plan.delete:
        run.report.deleted = run.store.delete(run.physical, plan.delete)
    run.store.flush(run.physical)


def _row(job: Job, vector: Any, chash: str) -> dict[str, Any]:
    return {
        "id": job.item.id,
        "vector": vector,
        "image": job.item.image,
        "content_hash": chash,
        "meta_hash": job.meta_hash,
        "source_sig": job.source_sig,
        "metadata": job.item.metadata,
    }


def _embed_and_upsert(run: _Run, jobs: list[Job]) -> None:
    if not jobs:
        return
    refs, members = _distinct_sources(jobs)
    report, tuning = run.report, run.tuning
    how = run.engine if run.engine is not None else f"{run.embedder.device}: {tuning}"
    log.info("embedding %d images (%d distinct) with %s", len(jobs), len(refs), how)
    # the local path is set up before the writer thread starts, as it always was (measured)
    batches = run.engine(refs) if run.engine is not None else _local_batches(run, refs)
    writer = run.writer
    if writer is None:
        writer = (_Writer if tuning.async_writes else _SyncWriter)(run.store, run.physical)
    done = 0
    t0 = time.perf_counter()
    try:
        for index, hashes, vectors, failed in batches:
            for src, reason in failed:
                report.failed.extend(Failure(jobs[p].item.id, reason) for p in members[src])
            if index:
                rows = [
                    _row(jobs[p], v.tolist(), h)
                    for src, v, h in zip(index, vectors, hashes, strict=True)
                    for p in members[src]
                ]
                writer.put(rows)
                added = sum(jobs[p].is_new for src in index for p in members[src])
                report.added += added
                report.updated += len(rows) - added
                report.embedded += len(rows)
            done += sum(len(members[src]) for src in [*index, *(s for s, _ in failed)])
            if run.progress:
                run.progress(done, len(jobs))
    finally:
        writer.close()
    report.embed_seconds = time.perf_counter() - t0


def _local_batches(run: _Run, refs: list[str]) -> Iterator[Embedded]:
    """The local engine: decode workers read and decode, this process embeds (set up at once).

    With an exported runtime (OpenVINO, ONNX Runtime) the workers are
    :class:`search.images.workers.PixelBatches` and nothing imports torch (~1.8 s and ~600 MB
    less per run); with PyTorch, or for the options only PyTorch has (device decoding, the
    per-image ablation), they are a DataLoader's.
    """
    embedder, tuning = run.embedder, run.tuning
    draft = embedder.info.image_size if tuning.draft else None
    decoder = catalog_decoder(
        run.settings.indexing.max_image_pixels,
        draft,
        allow_private=run.settings.indexing.allow_private_urls,
    )
    pre = embedder.runtime_preprocess
    if pre is not None and tuning.batched_preprocess and not tuning.device_decode:
        return _runtime_batches(embedder, pre, decoder, refs, tuning)
    return _torch_batches(embedder, decoder, refs, tuning)


def _runtime_batches(
    embedder: Embedder, pre: Preprocess, decoder: Decoder, refs: list[str], tuning: Tuning
) -> Iterator[Embedded]:
    from search.images.workers import PixelBatches

    batches = PixelBatches(
        refs, pre, decoder, batch_size=tuning.batch_size, workers=min(tuning.workers, len(refs))
    )
    seen = _SeenVectors()

    def embedded() -> Iterator[Embedded]:
        for batch in batches:
            if batch.pixels is None:
                yield [], [], [], batch.failed
                continue
            vectors = seen.embed(embedder, pre.normalise(batch.pixels), batch.hashes)
            yield batch.index, batch.hashes, vectors, batch.failed

    return embedded()


def _torch_batches(
    embedder: Embedder, decoder: Decoder, refs: list[str], tuning: Tuning
) -> Iterator[Embedded]:
    import torch  # the loader stage imports torch: only when there is work

    from search.images.batch import for_embedder
    from search.images.loader import ImageDataset, make_loader, model_input

    # torch runs the model on the torch backend only; next to an exported runtime it just
    # finishes each batch (uint8 -> normalised float), and with more than one thread its
    # OpenMP threads spin between those small ops on the cores the runtime needs
    torch.set_num_threads(tuning.threads if embedder.backend == "torch" else 1)
    device = embedder.device
    prep = for_embedder(embedder, batched=tuning.batched_preprocess, fast_resize=tuning.fast_resize)
    dataset = ImageDataset(refs, prep, decoder, raw_jpeg=tuning.device_decode)
    loader = make_loader(
        dataset,
        tuning.batch_size,
        workers=min(tuning.workers, len(refs)),
        pin_memory=tuning.pin_memory and device.startswith("cuda"),
    )
    seen = _SeenVectors()

    def embedded() -> Iterator[Embedded]:
        for batch in loader:
            index, hashes, pixels = model_input(batch, prep, device, decoder)
            vectors = seen.embed(embedder, pixels, hashes) if pixels is not None else []
            yield index, hashes, vectors, batch.failed

    return embedded()


def _distinct_sources(jobs: list[Job]) -> tuple[list[str], list[list[int]]]:
    """One entry per distinct image source, and the job positions that share it.

    Rows naming the same file (or URLs whose downloads have the same bytes) are read,
    decoded and embedded once per run; the vector goes to every row.
    """
    refs: list[str] = []
    members: list[list[int]] = []
    where: dict[str, int] = {}
    for pos, job in enumerate(jobs):
        ref = job.local or job.item.image  # URLs were downloaded into the cache
        key = job.source_sig if job.source_sig.startswith("url:") else ref
        if key not in where:
            where[key] = len(refs)
            refs.append(ref)
            members.append([])
        members[where[key]].append(pos)
    return refs, members


class _SeenVectors:
    """Vectors of the content hashes embedded recently in this run (bounded memory):
    identical bytes under different file names are embedded once."""

    def __init__(self, capacity: int = 4096) -> None:
        self.capacity = capacity
        self.vectors: OrderedDict[str, Any] = OrderedDict()

    def embed(self, embedder: Embedder, pixels: Any, hashes: list[str]) -> list[Any]:
        first = {h: k for k, h in reversed(list(enumerate(hashes)))}
        fresh = [k for h, k in first.items() if h not in self.vectors]
        if fresh:
            batch = pixels if len(fresh) == len(hashes) else pixels[sorted(fresh)]
            for k, vector in zip(sorted(fresh), embedder.embed_tensors(batch), strict=True):
                self.vectors[hashes[k]] = vector
        out = []
        for h in hashes:
            self.vectors.move_to_end(h)
            out.append(self.vectors[h])
        while len(self.vectors) > self.capacity:
            self.vectors.popitem(last=False)
        return out


def _retag(jobs: list[Job], store: MilvusStore, physical: str, report: IndexReport) -> None:
    """Rewrite rows whose image is unchanged, reusing the stored vector."""
    for start in range(0, len(jobs), 256):
        chunk = jobs[start : start + 256]
        rows = {r["id"]: r for r in store.get(physical, [j.item.id for j in chunk], vectors=True)}
        out = []
        for job in chunk:
            old = rows.get(job.item.id)
            if old is None:
                continue
            out.append(_row(job, list(old["vector"]), old["content_hash"]))
        store.upsert(physical, out)
        changed = sum(1 for j in chunk if j.meta_changed and j.item.id in rows)
        report.updated += changed
        report.unchanged += len(out) - changed
        report.refreshed += len(out) - changed


def _make_live_if_first(store: MilvusStore, alias: str, physical: str, report: IndexReport) -> None:
    live = store.resolve(alias)
    if live is None:
        if store.count(physical) == 0:
            return
        store.set_alias(alias, physical)
        live = physical
    report.live = live == physical
    if not report.live:
        log.info("%s is built but not live; `vsearch promote` makes it live", physical)


class _Writer:
    """Upserts batches in a background thread while the next batch embeds.

    Rows go to Milvus in requests of at least :attr:`min_rows` (the last one may be
    smaller) and at most :attr:`coalesce_rows`, whatever the batch size: each request has a
    fixed cost, and Lite's server runs in this process, on the cores the model and the decode
    workers use. Milvus Lite on the benchmark CPU, 1280-d vectors: 0.67-0.88 core-ms a row in
    requests of 8 rows, 0.37-0.51 in requests of 64 (docs/benchmarks.md).
    """

    min_rows = 64
    coalesce_rows = 256

    def __init__(self, store: MilvusStore, physical: str) -> None:
        self.store, self.physical = store, physical
        self.queue: queue.Queue[list[dict[str, Any]] | None] = queue.Queue(maxsize=4)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="vsearch-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        done = False
        while not done:
            rows = self.queue.get()
            if rows is None:
                return
            # Wait for min_rows, then take whatever else queued up while the last upsert
            # ran, up to coalesce_rows.
            while len(rows) < self.coalesce_rows:
                try:
                    more = self.queue.get(block=len(rows) < self.min_rows)
                except queue.Empty:
                    break
                if more is None:
                    done = True
                    break
                rows = rows + more
            if self.error is None:
                try:
                    self.store.upsert(self.physical, rows)
                except BaseException as exc:  # surfaced to the caller in put/close
                    self.error = exc

    def _raise(self) -> None:
        if self.error is not None:
            err = self.error
            raise err if isinstance(err, StoreError | ProvenanceMismatch) else StoreError(str(err))

    def put(self, rows: list[dict[str, Any]]) -> None:
        self._raise()
        self.queue.put(rows)

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()
        self._raise()


class _SyncWriter:
    """Upserts in the caller's thread (the ablation baseline for :class:`_Writer`)."""

    def __init__(self, store: MilvusStore, physical: str) -> None:
        self.store, self.physical = store, physical

    def put(self, rows: list[dict[str, Any]]) -> None:
        self.store.upsert(self.physical, rows)

    def close(self) -> None:
        return None
