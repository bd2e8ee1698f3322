"""The same catalog indexed by the local engine and by Ray (``--engine ray``), in one run.

Each engine runs in its own fresh process (a new Lite store, the same model cache), as a
new user would run ``vsearch index``; the parent samples the RSS of the child's whole
process tree (for Ray: the driver, its GCS, raylet and workers; shared pages, such as
Ray's object store, count once per process that maps them) every 0.25 s. Also measured,
in a third process: what each stage costs per image (read + decode + crop in one
process; the model's forward pass at the run's batch size and threads).

    python -m benchmarks.bench_engines                       # 2,000 images
    python -m benchmarks.bench_engines --count 200 --out /tmp/engines.json
    python -m benchmarks.bench_engines --backend torch       # both engines on PyTorch

Both engines use ``--backend`` (default ``auto``, what ``vsearch index`` uses: the fastest
backend measured on the machine, OpenVINO on the 2-core development CPU).

Prints a table and writes docs/bench/engines.json. The overhead target (issue 16) is
Ray's run time <= 1.25x the local engine's on the same machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import loadavg, machine, offline, table, write_json

OUT = Path("docs/bench/engines.json")


def _settings(store: Path, cache: Path, backend: str) -> Any:
    from search.config import Settings

    return Settings.of(
        uri=str(store / "vsearch.db"),
        cache_dir=str(cache),
        device="cpu",
        backend=backend,
        lock_dir=str(store / "locks"),
    )


def child_index(
    engine: str, manifest: Path, store: Path, cache: Path, backend: str
) -> dict[str, Any]:
    """One indexing run (in a fresh process): the report's figures."""
    from indexer.options import IndexOptions
    from indexer.pipeline import run_index

    t0 = time.perf_counter()
    report = run_index(manifest, _settings(store, cache, backend), IndexOptions(engine=engine))
    return {
        "engine": engine,
        "backend": backend,  # as asked; "stages" names what auto resolved to
        "process_to_done_s": time.perf_counter() - t0,
        "run_s": report.seconds,
        "embed_s": report.embed_seconds,
        "embedded": report.embedded,
        "failed": len(report.failed),
        "count": report.count,
    }


def child_stages(manifest: Path, cache: Path, n: int, backend: str) -> dict[str, Any]:
    """Per-image cost of each stage, one process: decode+crop, forward pass."""
    import csv

    import torch

    from indexer.decoding import catalog_decoder
    from indexer.tuning import choose
    from search.embedder import Embedder
    from search.images.batch import for_embedder
    from search.images.loader import ImageDataset

    settings = _settings(Path("/nonexistent"), cache, backend)
    emb = Embedder.from_settings(settings)
    tuning = choose(settings, "cpu")
    torch.set_num_threads(tuning.threads)
    prep = for_embedder(emb, fast_resize=tuning.fast_resize)
    with manifest.open(newline="") as fh:
        refs = [str(manifest.parent / r["image"]) for r in list(csv.DictReader(fh))[:n]]
    ds = ImageDataset(
        refs, prep, catalog_decoder(settings.indexing.max_image_pixels, emb.info.image_size)
    )
    t0 = time.perf_counter()
    crops = [ds[i][1] for i in range(len(refs))]
    decode = (time.perf_counter() - t0) / len(refs)
    batch = torch.stack([c for c in crops if c is not None][: tuning.batch_size])
    x = prep.finish(batch, "cpu")
    emb.embed_tensors(x)  # warm-up
    t0, rounds = time.perf_counter(), max(1, n // tuning.batch_size)
    for _ in range(rounds):
        emb.embed_tensors(x)
    forward = (time.perf_counter() - t0) / (rounds * len(batch))
    return {
        "backend": emb.backend,
        "images": len(refs),
        "decode_crop_ms_per_image": 1000 * decode,
        "forward_ms_per_image": 1000 * forward,
        "batch_size": tuning.batch_size,
        "threads": tuning.threads,
    }


def write_paths(uri: str, bulk_dir: Path, rows: int, dim: int = 1280) -> list[dict[str, Any]]:
    """Upsert vs bulk import of the same ``rows`` synthetic rows into a Milvus server, each
    into a fresh collection, until the rows are served with the index built (no model)."""
    import numpy as np

    from indexer.bulk import BulkSink
    from search.config import Settings
    from search.embedder import ModelInfo
    from search.store import MilvusStore

    model = ModelInfo("bench-writes", "", "", dim, False, 224, {"mean": [0.5] * 3})
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((rows, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    data = [
        {
            "id": f"w{i:07d}",
            "vector": vecs[i].tolist(),
            "image": f"img/w{i:07d}.jpg",
            "content_hash": f"{i:032x}",
            "meta_hash": f"{i:032x}",
            "source_sig": f"{i}:1",
            "metadata": {"title": f"item {i}", "price": i % 200},
        }
        for i in range(rows)
    ]
    out = []
    for how in ("upsert", "bulk"):
        store = MilvusStore(Settings.of(uri=uri))
        name = f"benchwrites_{how}_{int(time.time())}"
        store.create(name, model)
        t0 = time.perf_counter()
        if how == "upsert":
            for start in range(0, rows, 256):
                store.upsert(name, data[start : start + 256])
            store.flush(name)
            while store.count(name) < rows:
                time.sleep(0.2)
        else:
            sink = BulkSink(store, name, str(bulk_dir))
            for start in range(0, rows, 256):
                sink.put(data[start : start + 256])
            sink.close()
            sink.finish()
        served = time.perf_counter() - t0
        index = store.client.describe_index(name, "vector")
        while int(index.get("pending_index_rows", 0)) or int(index.get("indexed_rows", 0)) < rows:
            time.sleep(0.5)
            index = store.client.describe_index(name, "vector")
        out.append(
            {
                "write": how,
                "rows": rows,
                "dim": dim,
                "served_s": served,
                "indexed_s": time.perf_counter() - t0,
                "rows_per_s": rows / served,
            }
        )
        store.drop(name)
        store.close()
    return out


def _tree_rss(root: int) -> int:
    """Sum of VmRSS (bytes) over ``root`` and all its descendants."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    tree, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        kids = [p for p, pp in parents.items() if pp == pid and p not in tree]
        tree.update(kids)
        frontier.extend(kids)
    total = 0
    for pid in tree:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def run_child(args: list[str]) -> tuple[dict[str, Any], float, int]:
    """Run a child; (its JSON line, wall seconds, peak tree RSS)."""
    cmd = [sys.executable, "-m", "benchmarks.bench_engines", *args]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _tree_rss(proc.pid))
        time.sleep(0.25)
    wall = time.perf_counter() - t0
    out = proc.stdout.read() if proc.stdout else ""
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}")
    line = [x for x in out.splitlines() if x.startswith("{")][-1]
    return json.loads(line), wall, peak


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--workload", type=Path, default=None, help="reuse/build it here")
    parser.add_argument("--work", type=Path, default=Path("bench-results/engines"))
    parser.add_argument("--cache", type=Path, default=Path("bench-results/cache"))
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument(
        "--backend",
        default="auto",
        help="inference backend of both engines (default auto: what `vsearch index` uses)",
    )
    parser.add_argument(
        "--order",
        default="local,ray,ray,local",
        help="engines in run order (default ABBA: load drift on a shared machine cancels out)",
    )
    parser.add_argument("--writes-uri", help="also time upsert vs bulk import on this server")
    parser.add_argument("--writes-dir", type=Path, help="a folder that server reads (bulk)")
    parser.add_argument("--writes-rows", type=int, default=20000)
    parser.add_argument("--writes-only", action="store_true", help="only the write paths")
    parser.add_argument("--child", choices=("local", "ray", "stages"), help=argparse.SUPPRESS)
    parser.add_argument("--manifest", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    offline()
    if args.child == "stages":
        print(json.dumps(child_stages(args.manifest, args.cache, 200, args.backend)))
        return
    if args.child:
        print(
            json.dumps(child_index(args.child, args.manifest, args.store, args.cache, args.backend))
        )
        return

    import shutil

    from benchmarks.workload import Spec, build, describe

    if args.writes_only:
        writes = write_paths(args.writes_uri, args.writes_dir, args.writes_rows)
        print(table("upsert vs bulk import (Milvus server)", writes, list(writes[0])))
        old = json.loads(args.out.read_text()) if args.out.is_file() else {}
        old["write_paths"] = {"server": args.writes_uri, "loadavg": loadavg(), "runs": writes}
        args.out.write_text(json.dumps(old, indent=2, default=str) + "\n")
        print(f"\nwrote {args.out}")
        return

    folder = args.workload or args.work / f"workload-{args.count}"
    manifest = build(folder, Spec(args.count))
    common = ["--manifest", str(manifest), "--cache", str(args.cache), "--backend", args.backend]
    results: dict[str, Any] = {"machine": machine("cpu"), "workload": describe(folder)}
    rows = []
    for engine in args.order.split(","):
        store = args.work / f"store-{engine}"
        shutil.rmtree(store, ignore_errors=True)
        start_load = loadavg()
        got, wall, peak = run_child(["--child", engine, "--store", str(store), *common])
        got.update(
            process_wall_s=wall,
            peak_tree_rss_mb=peak / 2**20,
            images_per_s=got["embedded"] / got["run_s"] if got["run_s"] else 0.0,
            loadavg_start=start_load,
            loadavg_end=loadavg(),
        )
        rows.append(got)
        print(json.dumps(got), flush=True)
    mean = {
        e: sum(r["run_s"] for r in rows if r["engine"] == e)
        / max(1, sum(r["engine"] == e for r in rows))
        for e in ("local", "ray")
    }
    overhead = mean["ray"] / mean["local"] - 1
    results["engines"] = rows
    results["ray_overhead"] = {
        "order": args.order,
        "mean_run_s": mean,
        "run_ratio": mean["ray"] / mean["local"],
        "overhead_pct": 100 * overhead,
        "target_pct": 25,
        "met": overhead <= 0.25,
        "same_collection_size": len({r["count"] for r in rows}) == 1,
    }
    stages, _, _ = run_child(["--child", "stages", *common])
    results["stages"] = stages
    cols = ["engine", "embedded", "run_s", "embed_s", "images_per_s", "process_wall_s"]
    cols += ["peak_tree_rss_mb", "loadavg_start", "loadavg_end"]
    print(table(f"local vs Ray, {args.count} images ({args.order})", rows, cols))
    print(
        f"\nmean run time: local {mean['local']:.1f} s, ray {mean['ray']:.1f} s; Ray overhead "
        f"{100 * overhead:+.1f}% of the local run time (target <= 25%)"
    )
    print(table("per-image stage costs (one process)", [stages], list(stages)))
    write_json(args.out, results)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
