"""Search latency (query embedding + vector search) and recall of the approximate index.

Real embeddings: ``--real`` workload images (real-photo-like JPEGs, see workload.py) are
embedded once with the default model and cached under bench-results/. Queries are held-out
real images. Stores of 10k and 100k items hold the remaining real vectors, topped up with
synthetic ones drawn around them (a real vector plus noise, re-normalised), so the recall of
the real queries is measured among realistic neighbours. For each index configuration:
recall@10 against exact search (numpy), and p50/p95 latency for single queries and batches,
next to numpy brute force as the floor. Prints Markdown tables and writes JSON.

    python -m benchmarks.bench_search                 # Milvus Lite, 10k and 100k
    python -m benchmarks.bench_search --server        # also the Milvus 2.3.5 server
    python -m benchmarks.bench_search --quick         # seconds: a smoke run
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from search.config import CONSISTENCY_LEVELS

from . import common, workload

log = logging.getLogger("bench_search")
K = 10


def real_embeddings(args: argparse.Namespace, embedder: Any) -> tuple[np.ndarray, list[Path]]:
    """Embed the real-image workload once (cached): (vectors, image paths)."""
    import torch

    from indexer.decoding import catalog_decoder
    from indexer.tuning import device_defaults
    from search.images.batch import BatchPreprocess
    from search.images.loader import ImageDataset, make_loader, model_input

    spec = workload.Spec(args.real, 320, 480, seed=1)
    manifest = workload.build(args.results / f"workload-{args.real}-320", spec)
    paths = sorted((manifest.parent / "img").rglob("*.jpg"))
    cache = args.results / f"real-embeddings-{args.real}-{embedder.info.slug}.npy"
    if cache.is_file():
        return np.load(cache), paths
    tuning = device_defaults(embedder.device)
    torch.set_num_threads(tuning.threads)
    prep = BatchPreprocess(embedder.preprocess)
    size = embedder.info.image_size
    decoder = catalog_decoder(64_000_000, size)
    data = ImageDataset([str(p) for p in paths], prep, decoder)
    loader = make_loader(data, tuning.batch_size, workers=tuning.workers, pin_memory=False)
    out = np.zeros((len(paths), embedder.dim), np.float32)
    t0 = time.perf_counter()
    for batch in loader:
        index, _, pixels = model_input(batch, prep, embedder.device, decoder)
        if pixels is not None:
            out[index] = embedder.embed_tensors(pixels)
    log.info("embedded %d real images in %.0f s", len(paths), time.perf_counter() - t0)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, out)
    return out, paths


def fill(real: np.ndarray, n: int, rng: np.random.Generator, noise: float) -> np.ndarray:
    """``n`` vectors: the real ones first, then noisy copies of random real ones."""
    extra = n - len(real)
    if extra <= 0:
        return real[:n]
    base = real[rng.integers(0, len(real), extra)]
    synth = base + rng.normal(0, noise / np.sqrt(real.shape[1]), base.shape).astype(np.float32)
    synth /= np.linalg.norm(synth, axis=1, keepdims=True)
    return np.concatenate([real, synth.astype(np.float32)])


def exact_topk(store: np.ndarray, queries: np.ndarray, k: int = K) -> np.ndarray:
    scores = queries @ store.T
    top = np.argpartition(-scores, k, axis=1)[:, :k]
    order = np.take_along_axis(scores, top, 1).argsort(axis=1)[:, ::-1]
    return np.take_along_axis(top, order, 1)


def timed(fn: Any, n: int) -> list[float]:
    fn()  # warm-up
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def lat(name: str, ms: list[float], **extra: Any) -> dict[str, Any]:
    return {
        "what": name,
        "p50_ms": common.percentile(ms, 50),
        "p95_ms": common.percentile(ms, 95),
        **extra,
    }


def build_store(
    uri: str, name: str, vectors: np.ndarray, settings_kw: dict, info: Any
) -> tuple[Any, tuple[int, int] | None]:
    """A fresh store holding ``vectors``, and its index progress (see :func:`wait_for_index`)."""
    from search.config import Settings
    from search.store import MilvusStore

    store = MilvusStore(Settings.of(uri=uri, **settings_kw))
    if store.exists(name):
        store.drop(name)
    store.create(name, info)
    t0 = time.perf_counter()
    rows = [
        {
            "id": f"v{i}",
            "vector": v.tolist(),
            "image": "",
            "content_hash": "",
            "meta_hash": "",
            "source_sig": "",
            "metadata": {},
        }  # fmt: skip
        for i, v in enumerate(vectors)
    ]
    for start in range(0, len(rows), 2000):
        store.upsert(name, rows[start : start + 2000])
    store.flush(name)
    store.count(name)
    progress = wait_for_index(store, name, vectors[:8])
    log.info("%s: %d rows in %.1f s", name, len(rows), time.perf_counter() - t0)
    return store, progress


def indexed_rows(store: Any, name: str) -> tuple[int, int] | None:
    """(indexed, total) rows of the vector index as the store reports them, if it does."""
    try:
        index = store.client.list_indexes(name)[0]
        info = store.client.describe_index(name, index)
        return int(info["indexed_rows"]), int(info["total_rows"])
    except Exception:  # a store without progress figures
        return None


def wait_for_index(
    store: Any, name: str, probe: np.ndarray, limit_s: float = 900
) -> tuple[int, int] | None:
    """Indexes build in the background after a flush: wait until they cover every row.

    Milvus (server and Lite 3.2.2) reports its progress (indexed vs total rows); until
    then unindexed segments are searched by brute force, which would inflate recall. A
    store that reports nothing: wait until search latency settles. Returns the (indexed,
    total) rows the store last reported, or None.
    """
    deadline = time.monotonic() + limit_s
    while (progress := indexed_rows(store, name)) is not None and progress[1] > 0:
        if progress[0] >= progress[1] or time.monotonic() > deadline:
            log.info("%s: index covers %d of %d rows", name, *progress)
            return progress
        time.sleep(2)
    last = None
    while time.monotonic() < deadline:
        t0 = time.perf_counter()
        store.search(name, probe, limit=K)
        took = time.perf_counter() - t0
        if last is not None and took < 1.5 * last and took < 1.0:
            return progress
        last = took
        time.sleep(2)
    return progress


def search_ids(store: Any, name: str, queries: np.ndarray, ef: int | None) -> np.ndarray:
    """Top-K row positions for each query (ef overrides the store's search_ef)."""
    if ef is not None:
        store.settings = store.settings.replace(search_ef=ef)
    out = []
    for start in range(0, len(queries), 32):
        for hits in store.search(name, queries[start : start + 32], limit=K):
            out.append([int(m.id[1:]) for m in hits] + [-1] * (K - len(hits)))
    return np.array(out)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth, strict=True)]))


def bench_backend(
    args: argparse.Namespace, backend: str, uri: str, data: dict, info: Any
) -> list[dict]:
    rows: list[dict] = []
    queries = data["queries"]
    for n in args.sizes:
        vectors = data["vectors"][n]
        truth = exact_topk(vectors, queries)
        for cfg in args.configs:
            if n > cfg.get("max_items", n):
                continue  # slow builds only on the small store
            kw = {"index_type": cfg["index_type"], "hnsw_m": cfg.get("M", 16),
                  "hnsw_ef_construction": cfg.get("efc", 200),
                  "search_consistency": args.consistency}  # fmt: skip
            name = f"bench_{n}_{cfg['label']}".replace("-", "_").replace("=", "")
            t0 = time.perf_counter()
            store, progress = build_store(uri, name, vectors, kw, info)
            build_s = time.perf_counter() - t0
            for ef in cfg.get("ef", [None]):
                found = search_ids(store, name, queries, ef)
                one = timed(
                    lambda s=store, c=name: s.search(c, queries[:1], limit=K), args.latency_n
                )
                many = timed(
                    lambda s=store, c=name: s.search(c, queries[: args.batch], limit=K),
                    max(3, args.latency_n // 4),
                )
                row = {"backend": backend, "items": n, "index": cfg["label"], "ef": ef or "",
                       "consistency": args.consistency,
                       "indexed_rows": progress[0] if progress else "",
                       "recall@10": recall(found, truth), "build_s": build_s,
                       "single_p50_ms": common.percentile(one, 50), "single_p95_ms": common.percentile(one, 95),
                       f"batch{args.batch}_p50_ms": common.percentile(many, 50),
                       f"batch{args.batch}_p95_ms": common.percentile(many, 95)}  # fmt: skip
                rows.append(row)
                log.info("%s", row)
            store.drop(name)
            store.close()
    return rows


def numpy_floor(args: argparse.Namespace, data: dict) -> list[dict]:
    q = data["queries"]
    rows = []
    for n in args.sizes:
        v = data["vectors"][n]
        one = timed(lambda v=v: exact_topk(v, q[:1]), args.latency_n)
        many = timed(lambda v=v: exact_topk(v, q[: args.batch]), max(3, args.latency_n // 4))
        rows.append({"backend": "numpy exact", "items": n, "index": "brute force", "recall@10": 1.0,
                     "single_p50_ms": common.percentile(one, 50), "single_p95_ms": common.percentile(one, 95),
                     f"batch{args.batch}_p50_ms": common.percentile(many, 50),
                     f"batch{args.batch}_p95_ms": common.percentile(many, 95)})  # fmt: skip
    return rows


def embed_latency(args: argparse.Namespace, embedder: Any, paths: list[Path]) -> list[dict]:
    import torch

    from indexer.tuning import device_defaults

    blobs = [p.read_bytes() for p in paths[: args.batch]]
    bs = device_defaults(embedder.device).batch_size
    rows = []
    for threads in sorted({1, common.cores()}):
        torch.set_num_threads(threads)
        one = timed(lambda: embedder.embed_images(blobs[:1]), args.latency_n)
        many = timed(
            lambda: embedder.embed_images(blobs, batch_size=bs), max(3, args.latency_n // 4)
        )
        rows.append(lat("embed 1 query image", one, threads=threads))
        rows.append(lat(f"embed {len(blobs)} query images", many, threads=threads))
    return rows


def run(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks.bench_indexing import load_embedder
    from search.embedder import resolve_device

    device = resolve_device(args.device)
    result: dict[str, Any] = {"machine": common.machine(device)}
    embedder = load_embedder(device, args.cache_dir, backend=args.inference_backend)
    real, paths = real_embeddings(args, embedder)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(real))
    q_idx, base_idx = order[: args.queries], order[args.queries :]
    data = {"queries": real[q_idx], "vectors": {}}
    for n in args.sizes:
        data["vectors"][n] = fill(real[base_idx], n, rng, args.noise)
    result["data"] = {"real_images": len(real), "queries": args.queries, "dim": int(real.shape[1]),
                      "synthetic_noise": args.noise, "sizes": args.sizes}  # fmt: skip
    result["embedding"] = embed_latency(args, embedder, [paths[i] for i in q_idx])
    result["search"] = numpy_floor(args, data)
    with tempfile.TemporaryDirectory(
        prefix="vsearch-bench-search-", ignore_cleanup_errors=True
    ) as tmp:
        if "lite" in args.backends:
            result["search"] += bench_backend(
                args, "milvus-lite", str(Path(tmp) / "bench.db"), data, embedder.info
            )
        if "server" in args.backends:
            from tests.server_backend import start_milvus_server

            handle = start_milvus_server(Path(tmp) / "server")
            try:
                result["search"] += bench_backend(
                    args, "milvus-2.3.5", handle.uri, data, embedder.info
                )
            finally:
                handle.stop()
    return result


CONFIGS = [
    {"label": "FLAT", "index_type": "FLAT", "max_items": 10_000},
    {
        "label": "HNSW-M16-efc200",
        "index_type": "HNSW",
        "M": 16,
        "efc": 200,
        "ef": [64, 128, 256, 512],
    },
    {
        "label": "HNSW-M8-efc100",
        "index_type": "HNSW",
        "M": 8,
        "efc": 100,
        "ef": [32, 64, 128],
        "max_items": 10_000,
    },
]


def report(result: dict[str, Any], batch: int) -> str:
    m = result["machine"]
    cols = ["backend", "items", "index", "ef", "consistency", "recall@10", "single_p50_ms", "single_p95_ms",
            f"batch{batch}_p50_ms", f"batch{batch}_p95_ms", "build_s"]  # fmt: skip
    return "\n".join(
        [
            f"machine: {m['cores']} cores, {m['cpu']}, load {m['loadavg_start']} -> {m.get('loadavg_end', '')}",
            f"data: {result['data']}",
            common.table(
                "Query embedding (decode + preprocess + forward)",
                result["embedding"],
                ["what", "threads", "p50_ms", "p95_ms"],
            ),
            common.table(
                "Vector search (top-10), recall against exact search", result["search"], cols
            ),
        ]
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    common.offline()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--real", type=int, default=5000, help="real images to embed (cached)")
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--noise", type=float, default=0.6, help="spread of the synthetic vectors")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--latency-n", type=int, default=60)
    p.add_argument("--server", action="store_true", help="also the Milvus 2.3.5 server")
    p.add_argument(
        "--inference-backend",
        default="torch",
        choices=["auto", "torch", "onnxruntime", "openvino"],
        help="the embedder backend of the query-embedding table (onnxruntime/openvino use "
        "every core whatever its threads column says)",
    )
    p.add_argument(
        "--backends", nargs="+", choices=["lite", "server"], default=["lite"], help="stores to run"
    )
    p.add_argument(
        "--consistency",
        default="Strong",
        choices=CONSISTENCY_LEVELS,
        help="search consistency level (Lite ignores it)",
    )
    p.add_argument("--only-hnsw-ef", type=int, nargs="+", help="only HNSW-M16-efc200 at these ef")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--results", type=Path, default=common.RESULTS)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    args.configs = CONFIGS
    if args.server and "server" not in args.backends:
        args.backends.append("server")
    if args.only_hnsw_ef:
        args.configs = [{**CONFIGS[1], "ef": args.only_hnsw_ef}]
    if args.quick:
        args.real, args.queries, args.sizes, args.latency_n = 48, 8, [200], 4
        args.configs = [CONFIGS[0], {**CONFIGS[1], "ef": [16]}]
    common.setup_logging("bench_search", "benchmarks")
    result = run(args)
    out = args.json or args.results / f"search-{result['machine']['device']}.json"
    common.publish(out, result, report(result, args.batch))
    return result


if __name__ == "__main__":
    main()
