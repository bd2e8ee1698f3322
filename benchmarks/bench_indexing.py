"""Indexing throughput: compute bound vs our indexer vs the naive loop, sweep and ablation.

On one workload and one model, in one run:
  a) compute bound: the model's forward pass alone on preprocessed tensors, swept over batch
     size and torch threads (plus inference_mode / channels-last variants at the best point);
  b) ``run_index`` end to end (read, decode, preprocess, embed, upsert into Milvus Lite, flush)
     with its default settings for this device, and a sweep of batch/workers/threads;
  c) the naive loop: one image at a time, open, preprocess, embed, insert.
Then each pipeline stage is switched off one at a time (ablation). Prints Markdown tables
and writes JSON (default bench-results/indexing-<device>.json).

    python -m benchmarks.bench_indexing                 # ~15 minutes on a 2-core CPU
    python -m benchmarks.bench_indexing --quick         # seconds: a smoke run
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from . import common, workload

log = logging.getLogger("bench_indexing")


def load_embedder(
    device: str,
    cache_dir: str | None,
    precision: str = "auto",
    backend: str = "torch",
    threads: int = 0,
) -> Any:
    from search.config import DEFAULT_MODEL
    from search.embedder import Embedder

    return Embedder(
        DEFAULT_MODEL,
        device=device,
        precision=precision,
        cache_dir=cache_dir,
        backend=backend,
        threads=threads,
    )


def preprocessed(embedder: Any, paths: list[Path], n: int) -> Any:
    import torch

    from search.images import open_image

    size = embedder.info.image_size
    tensors = [embedder.preprocess(open_image(p, draft_size=size)) for p in paths[:n]]
    return torch.stack(tensors)


def forward_rate(
    embedder: Any,
    pixels: Any,
    batch: int,
    threads: int,
    min_images: int,
    max_s: float = 60.0,
    stats: dict[str, float] | None = None,
) -> float:
    """Images/s of ``embed_tensors`` on already preprocessed pixels.

    Runs ``min_images`` images, or at least one batch when that takes over ``max_s``;
    ``stats`` receives the images run and the process's CPU seconds (``cpu_s``).
    """
    import torch

    torch.set_num_threads(threads)
    n = len(pixels)
    embedder.embed_tensors(pixels[:batch])  # warm-up (allocator, kernels)
    if embedder.device.startswith("cuda"):
        torch.cuda.synchronize()
    done, start, t0, cpu0 = 0, 0, time.perf_counter(), common.cpu_seconds()[0]
    while done < min_images and not (done >= batch and time.perf_counter() - t0 > max_s):
        chunk = pixels[start : start + batch]
        if len(chunk) < batch:
            start, chunk = 0, pixels[:batch]
        embedder.embed_tensors(chunk)
        done += len(chunk)
        start = (start + batch) % n
    seconds = time.perf_counter() - t0
    if stats is not None:
        stats.update(images=done, cpu_s=common.cpu_seconds()[0] - cpu0)
    return done / seconds


def model_variants(embedder: Any, pixels: Any, batch: int, threads: int, images: int) -> list[dict]:
    """inference_mode vs no_grad vs autograd, and channels-last vs contiguous, raw forward."""
    import contextlib

    import torch

    torch.set_num_threads(threads)
    model, device = embedder.torch_model, embedder.device
    x = pixels[:batch].to(device)
    rows = []
    for fmt_name, fmt in (
        ("contiguous", torch.contiguous_format),
        ("channels_last", torch.channels_last),
    ):
        model.to(memory_format=fmt)
        xx = x.contiguous(memory_format=fmt)
        for mode_name, ctx in (
            ("inference_mode", torch.inference_mode),
            ("no_grad", torch.no_grad),
            ("autograd", contextlib.nullcontext),
        ):
            with ctx():
                model.encode_image(xx)
                t0, done = time.perf_counter(), 0
                while done < images:
                    model.encode_image(xx)
                    done += batch
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
            rows.append(
                {
                    "memory_format": fmt_name,
                    "grad_mode": mode_name,
                    "img_s": done / (time.perf_counter() - t0),
                }
            )
    model.to(memory_format=torch.channels_last)  # as the Embedder keeps it
    return rows


def index_rate(manifest: Path, embedder: Any, tuning: Any, tmp: Path, tag: str) -> dict[str, Any]:
    """One fresh ``run_index`` into a new Lite database; images/s over the whole run."""
    from indexer.pipeline import IndexOptions, run_index
    from search.config import Settings

    settings = Settings.of(
        uri=str(tmp / f"{tag}-{time.monotonic_ns()}.db"),
        device=embedder.device,
        lock_dir=str(tmp / "locks"),
        cache_dir=str(tmp / "cache"),
    )
    from search.store import MilvusStore

    store = MilvusStore(settings)
    store.collections()  # open Lite (it starts its server) before the clock starts
    cpu0 = common.cpu_seconds()
    try:
        with common.GpuUtilisation(embedder.device) as gpu:
            report = run_index(
                manifest, settings, IndexOptions(tuning=tuning), embedder=embedder, store=store
            )
    finally:
        store.close()
    cpu1 = common.cpu_seconds()
    if report.failed:
        raise RuntimeError(f"{tag}: {len(report.failed)} images failed: {report.failed[:3]}")
    n = max(1, report.embedded)
    return {
        "img_s": report.embedded / report.seconds,
        "embedded": report.embedded,
        "seconds": round(report.seconds, 2),
        "loop_seconds": round(report.embed_seconds, 2),
        # CPU time per image: the main process (model, writer, Lite's in-process server) and
        # the decode workers (reaped children), in core-milliseconds
        "main_cpu_ms": 1000 * (cpu1[0] - cpu0[0]) / n,
        "worker_cpu_ms": 1000 * (cpu1[1] - cpu0[1]) / n,
        **gpu.summary(),  # CUDA: how busy the GPU was during the run
    }


def naive_rate(manifest: Path, embedder: Any, tmp: Path, limit: int) -> dict[str, Any]:
    """The loop a first version would write: one image at a time, full decode, one insert."""
    import torch
    from PIL import Image

    from search.config import Settings
    from search.store import MilvusStore

    torch.set_num_threads(common.cores())
    settings = Settings.of(uri=str(tmp / f"naive-{time.monotonic_ns()}.db"), device=embedder.device)
    store = MilvusStore(settings)
    store.collections()  # open Lite before the clock starts, as for the indexer
    rows = list(csv.DictReader(manifest.open()))[:limit]
    t0 = time.perf_counter()
    store.create("naive", embedder.info)
    for row in rows:
        img = Image.open(manifest.parent / row["image"]).convert("RGB")
        vector = embedder.embed_tensors(embedder.preprocess(img).unsqueeze(0))[0]
        record = {"id": row["id"], "vector": vector.tolist(), "image": row["image"]}
        record.update(content_hash="", meta_hash="", source_sig="", metadata=row)
        store.upsert("naive", [record])
    store.flush("naive")
    seconds = time.perf_counter() - t0
    store.close()
    return {"img_s": len(rows) / seconds, "embedded": len(rows), "seconds": round(seconds, 2)}


def ablations(device: str, best: Any) -> list[tuple[str, Any]]:
    """Each stage off in turn, starting from the chosen tuning."""
    rep = dataclasses.replace
    cores = common.cores()
    out = [
        ("all on (chosen)", best),
        ("decode in main process (workers=0)", rep(best, workers=0)),
        ("no JPEG draft decode", rep(best, draft=False)),
        ("PIL resize (bit-exact model transform)", rep(best, fast_resize=False)),
        ("per-image float preprocessing", rep(best, batched_preprocess=False)),
        ("synchronous upserts (no writer thread)", rep(best, async_writes=False)),
        (f"threads fight workers (threads={cores})", rep(best, threads=cores)),
        ("decode JPEGs on the device", rep(best, device_decode=True)),
    ]
    if device.startswith("cuda"):
        out.append(("no pinned memory", rep(best, pin_memory=False)))
    return [(name, t) for name, t in out if t != best or name.startswith("all on")]


def backend_comparison(
    args: argparse.Namespace, manifest: Path, small: Path, paths: list[Path], tmp: Path
) -> dict[str, Any]:
    """a) and b) for each backend on the same images, round-robin; workers sweep per runtime."""
    from indexer.tuning import device_defaults

    device = "cpu"  # the exported backends run on the CPU
    default = device_defaults(device)
    if args.backend_threads:  # e.g. 1: per-image CPU cost hardly disturbed by other load
        default = dataclasses.replace(default, threads=args.backend_threads)
    embs = {
        b: load_embedder(device, args.cache_dir, backend=b, threads=default.threads)
        for b in args.backends
    }
    pixels = preprocessed(next(iter(embs.values())), paths, max(16, default.batch_size))
    runs: dict[str, list[dict[str, float]]] = {b: [] for b in embs}
    for k in range(args.repeats):
        for name, emb in embs.items():
            stats: dict[str, float] = {}
            a = forward_rate(
                emb, pixels, default.batch_size, default.threads, args.count, stats=stats
            )
            b = index_rate(manifest, emb, default, tmp, f"{name}{k}")
            work_ms = b["main_cpu_ms"] + b["worker_cpu_ms"]
            runs[name].append(
                {
                    "forward_img_s": a,
                    "indexer_img_s": b["img_s"],
                    "b_over_a": b["img_s"] / a,
                    "forward_cpu_ms": 1000 * stats["cpu_s"] / stats["images"],
                    "indexer_cpu_ms": work_ms,
                    # all cores busy on this backend's decode + forward work per image
                    "cpu_ceiling_img_s": 1000 * common.cores() / work_ms,
                }
            )
            log.info("backend %s round %d: a=%.1f b=%.1f img/s", name, k, a, b["img_s"])
    rows = []
    base = common.median([r["indexer_img_s"] for r in runs[args.backends[0]]])
    base_fw = common.median([r["forward_img_s"] for r in runs[args.backends[0]]])
    for name, reps in runs.items():
        row = {key: common.median([r[key] for r in reps]) for key in reps[0]}
        row["backend"] = name
        row["indexer_vs_first"] = row["indexer_img_s"] / base
        row["forward_vs_first"] = row["forward_img_s"] / base_fw
        row["of_cpu_ceiling"] = row["indexer_img_s"] / row["cpu_ceiling_img_s"]
        rows.append(row)
    compute = compute_bound(embs, rows)
    workers = []
    for name, emb in embs.items():
        if name == "torch":
            continue
        for w in sorted({0, 1, 2, common.cores()}):
            t = dataclasses.replace(default, workers=w)
            r = index_rate(small, emb, t, tmp, f"workers-{name}")
            workers.append({"backend": name, "workers": w, "img_s": r["img_s"]})
            log.info("backend %s workers %d: %.1f img/s", name, w, r["img_s"])
    return {
        "rows": rows,
        "repeats": runs,
        "workers": workers,
        "tuning": dataclasses.asdict(default),
        "compute": compute,
    }


def compute_bound(embs: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Each backend's forward against this core's measured f32 GEMM rate, and the indexer
    ratio the fastest runtime could reach with its forward at that rate
    (:mod:`benchmarks.roofline`); None without OpenVINO (it counts and measures) or with
    no runtime beside the first backend."""
    from . import roofline

    ov = embs.get("openvino")
    if ov is None or len(rows) < 2 or not ov.exports.openvino_xml.is_file():
        return None
    macs, gemm = roofline.model_macs(ov.exports.openvino_xml), roofline.gemm_gflops()
    for row in rows:
        row["forward_gflops"] = roofline.forward_gflops(macs, row["forward_cpu_ms"])
        row["of_gemm_rate"] = row["forward_gflops"] / gemm
    bound = roofline.ratio_bound(rows, macs, gemm, common.cores())
    log.info("compute: %.3f GMAC per picture, f32 GEMM %.1f GFLOP/s per core", macs / 1e9, gemm)
    return {"gmac_per_image": macs / 1e9, "gemm_gflops_per_core": gemm, "bound": bound}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from indexer.tuning import Tuning, device_defaults
    from search.embedder import resolve_device

    device = resolve_device(args.device)
    cores = common.cores()
    spec = workload.Spec(args.count, args.min_side, args.max_side)
    manifest = workload.build(args.results / f"workload-{args.count}-{args.min_side}", spec)
    small = workload.prefix(manifest, args.sweep_count)  # for the sweep and the ablation
    paths = sorted((manifest.parent / "img").rglob("*.jpg"))
    result: dict[str, Any] = {
        "machine": common.machine(device),
        "workload": workload.describe(manifest.parent) | {"spec": dataclasses.asdict(spec)},
    }
    if args.backends_only:
        with tempfile.TemporaryDirectory(prefix="vsearch-bench-", ignore_cleanup_errors=True) as t:
            result["backends"] = backend_comparison(args, manifest, small, paths, Path(t))
        return result
    embedder = load_embedder(device, args.cache_dir)
    result["model"] = embedder.info.describe()
    pixels = preprocessed(embedder, paths, min(len(paths), max(args.batches) * 2))

    # a) compute bound sweep
    sweep = []
    for threads in args.threads or sorted({1, max(1, cores // 2), cores}):
        for batch in args.batches:
            rate = forward_rate(embedder, pixels, batch, threads, max(args.min_images, 2 * batch))
            sweep.append({"batch": batch, "threads": threads, "img_s": rate})
            log.info("forward batch %d threads %d: %.1f img/s", batch, threads, rate)
    best_fw = max(sweep, key=lambda r: r["img_s"])
    result["compute_sweep"] = sweep
    result["model_variants"] = model_variants(
        embedder, pixels, best_fw["batch"], best_fw["threads"], args.min_images
    )

    with tempfile.TemporaryDirectory(prefix="vsearch-bench-", ignore_cleanup_errors=True) as tmpdir:
        tmp = Path(tmpdir)
        default = device_defaults(device)
        # indexer tuning sweep
        grid = []
        if not args.quick:
            for b in args.index_batches:
                for w in sorted({0, 1, 2, max(1, cores - 1)}):
                    for th in args.index_threads or sorted({1, cores}):
                        t = Tuning(batch_size=b, workers=w, threads=th)
                        r = index_rate(small, embedder, t, tmp, "sweep")
                        grid.append({"batch": b, "workers": w, "threads": th, **r})
                        log.info("index b=%d w=%d th=%d: %.1f img/s", b, w, th, r["img_s"])
        result["index_sweep"] = grid
        # a / b / c back to back, repeated; b uses the device defaults of indexer/tuning.py
        reps = []
        for k in range(args.repeats):
            # a: the better of two runs, each as long as the indexer's (a conservative bound)
            a, a_cpu = 0.0, 0.0
            for _ in range(2):
                stats: dict[str, float] = {}
                rate = forward_rate(
                    embedder, pixels, best_fw["batch"], best_fw["threads"], args.count, stats=stats
                )
                if rate > a:
                    a, a_cpu = rate, 1000 * stats["cpu_s"] / stats["images"]
            b = index_rate(manifest, embedder, default, tmp, f"e2e{k}")
            c = naive_rate(manifest, embedder, tmp, args.naive_count)
            reps.append(
                {
                    "compute_img_s": a,
                    "indexer_img_s": b["img_s"],
                    "naive_img_s": c["img_s"],
                    "b_over_a": b["img_s"] / a,
                    "b_over_c": b["img_s"] / c["img_s"],
                    "forward_cpu_ms": a_cpu,
                    "indexer_main_cpu_ms": b["main_cpu_ms"],
                    "indexer_worker_cpu_ms": b["worker_cpu_ms"],
                    "indexer_loop_img_s": b["embedded"] / b["loop_seconds"],
                    # b/a if b's CPU per image were spread perfectly over the cores that a
                    # keeps busy: the most any pipeline with b's per-image work can reach
                    "b_over_a_ceiling": a_cpu / (b["main_cpu_ms"] + b["worker_cpu_ms"]),
                    **{k: v for k, v in b.items() if k.startswith("gpu_util")},
                }
            )
            log.info("repeat %d: a=%.1f b=%.1f c=%.1f", k, a, b["img_s"], c["img_s"])
        summary = {key: common.median([r[key] for r in reps]) for key in reps[0]}
        summary["default_tuning"] = dataclasses.asdict(default)
        summary["best_forward"] = best_fw
        result["repeats"], result["summary"] = reps, summary
        # ablation
        # Round-robin rounds so that a drift of the machine's load hits every variant alike.
        variants = ablations(device, default)
        rates: dict[str, list[float]] = {name: [] for name, _ in variants}
        embedded: dict[str, int] = {}
        for k in range(args.ablation_rounds):
            for name, t in variants:
                r = index_rate(small, embedder, t, tmp, "ablation")
                rates[name].append(r["img_s"])
                embedded[name] = min(r["embedded"], embedded.get(name, r["embedded"]))
                log.info("ablation round %d %s: %.1f img/s", k, name, r["img_s"])
        base = common.median(rates[variants[0][0]])
        result["ablation"] = [
            {
                "variant": name,
                "img_s": common.median(rates[name]),
                "rounds": rates[name],
                "embedded": embedded[name],
                "vs_all_on": common.median(rates[name]) / base,
            }
            for name, _ in variants
        ]
        if len(args.backends) > 1:
            result["backends"] = backend_comparison(args, manifest, small, paths, tmp)
    return result


def backend_report(data: dict[str, Any]) -> str:
    cols = ["backend", "forward_img_s", "indexer_img_s", "forward_vs_first", "indexer_vs_first",
            "b_over_a", "indexer_cpu_ms", "cpu_ceiling_img_s", "of_cpu_ceiling"]  # fmt: skip
    parts = [
        common.table(
            f"Backends, same images, same run (a: forward, b: indexer; tuning {data['tuning']})",
            data["rows"],
            cols,
        )
    ]
    first = next(iter(data["repeats"]))
    best = {name: {k: max(r[k] for r in reps) for k in ("forward_img_s", "indexer_img_s")}
            for name, reps in data["repeats"].items()}  # fmt: skip
    rows = [
        {"backend": name, "best_forward_img_s": b["forward_img_s"],
         "best_indexer_img_s": b["indexer_img_s"],
         "forward_vs_first": b["forward_img_s"] / best[first]["forward_img_s"],
         "indexer_vs_first": b["indexer_img_s"] / best[first]["indexer_img_s"]}
        for name, b in best.items()
    ]  # fmt: skip
    parts.append(
        common.table(
            "Best round of each (the least disturbed by other load on the machine)",
            rows,
            [
                "backend",
                "best_forward_img_s",
                "best_indexer_img_s",
                "forward_vs_first",
                "indexer_vs_first",
            ],
        )  # fmt: skip
    )
    if data.get("compute"):
        compute = data["compute"]
        parts.append(
            common.table(
                f"Forward against this core's f32 GEMM rate ({compute['gmac_per_image']:.3f} "
                f"GMAC per picture; GEMM {compute['gemm_gflops_per_core']:.1f} GFLOP/s per core)",
                data["rows"],
                ["backend", "forward_cpu_ms", "forward_gflops", "of_gemm_rate"],
            )
        )
        parts.append(
            common.table(
                "Indexer ratio reachable with the forward at the GEMM rate (the rest as measured)",
                [compute["bound"]],
                [
                    "backend",
                    "vs",
                    "forward_at_gemm_rate_cpu_ms",
                    "forward_cpu_ms",
                    "rest_cpu_ms",
                    "ceiling_img_s",
                    "ratio_measured",
                    "ratio_at_run_share",
                    "ratio_at_full_share",
                ],  # fmt: skip
            )
        )
    if data["workers"]:
        parts.append(
            common.table(
                "Decode workers (indexer, sweep workload)",
                data["workers"],
                ["backend", "workers", "img_s"],
            )
        )
    return "\n".join(parts)


def report(result: dict[str, Any]) -> str:
    m = result["machine"]
    head = [
        f"machine: {m['cores']} cores, {m['cpu']}, device {m['device']}, "
        f"load {m['loadavg_start']} -> {m.get('loadavg_end', '')}",
        f"workload: {result['workload']}",
    ]
    if "summary" not in result:  # --backends-only
        return "\n".join([*head, backend_report(result["backends"])])
    s = result["summary"]
    parts = [
        *head,
        common.table(
            "Compute bound sweep (forward only)",
            result["compute_sweep"],
            ["batch", "threads", "img_s"],
        ),
        common.table(
            "Forward variants at the best point",
            result["model_variants"],
            ["memory_format", "grad_mode", "img_s"],
        ),
    ]
    if result["index_sweep"]:
        cols = ["batch", "workers", "threads", "img_s", "seconds"]
        parts.append(
            common.table("Indexer sweep (run_index end to end)", result["index_sweep"], cols)
        )
    cols = ["compute_img_s", "indexer_img_s", "naive_img_s", "b_over_a", "b_over_c"]
    parts.append(
        common.table("a) compute bound, b) indexer default, c) naive", result["repeats"], cols)
    )
    cols = [
        "forward_cpu_ms",
        "indexer_main_cpu_ms",
        "indexer_worker_cpu_ms",
        "indexer_loop_img_s",
        "b_over_a_ceiling",
    ]
    if "gpu_util_mean_pct" in result["repeats"][0]:
        cols += ["gpu_util_mean_pct", "gpu_util_max_pct"]
    parts.append(
        common.table(
            "CPU core-ms per image (a's forward; b's main process and workers)",
            result["repeats"],
            cols,
        )
    )
    parts.append(
        f"\nmedian: a={s['compute_img_s']:.1f} b={s['indexer_img_s']:.1f} c={s['naive_img_s']:.1f} img/s;"
        f" b/a={s['b_over_a']:.2f}  b/c={s['b_over_c']:.2f}  (default {s['default_tuning']})"
    )
    parts.append(
        common.table(
            "Ablation (one stage off at a time)",
            result["ablation"],
            ["variant", "img_s", "vs_all_on"],
        )
    )
    if "backends" in result:
        parts.append(backend_report(result["backends"]))
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    common.offline()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--count", type=int, default=1000, help="images for a, b and c")
    p.add_argument("--sweep-count", type=int, default=400, help="images per sweep and ablation run")
    p.add_argument("--min-side", type=int, default=800)
    p.add_argument("--max-side", type=int, default=1200)
    p.add_argument("--naive-count", type=int, default=200)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--ablation-rounds", type=int, default=2)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8, 16, 32, 64])
    p.add_argument("--threads", type=int, nargs="+", default=None)
    p.add_argument("--index-batches", type=int, nargs="+", default=[4, 8, 16])
    p.add_argument("--index-threads", type=int, nargs="+", default=None)
    p.add_argument("--min-images", type=int, default=96)
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--results", type=Path, default=common.RESULTS)
    p.add_argument("--json", type=Path, default=None, help="output file")
    p.add_argument("--quick", action="store_true", help="tiny smoke run (no sweep of the indexer)")
    p.add_argument(
        "--backends",
        nargs="+",
        default=["torch"],
        choices=["torch", "onnxruntime", "openvino"],
        help="compare these inference backends (the first is the baseline of the ratios)",
    )
    p.add_argument(
        "--backends-only", action="store_true", help="only the backend comparison (no sweeps)"
    )
    p.add_argument(
        "--backend-threads",
        type=int,
        default=0,
        help="model threads in the backend comparison (0: the device default)",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.count, args.naive_count, args.repeats = min(args.count, 16), 4, 1
        args.sweep_count = args.count
        args.ablation_rounds = 1
        args.batches, args.min_images, args.min_side, args.max_side = [4], 8, 256, 320
    common.setup_logging("bench_indexing", "benchmarks")
    result = run(args)
    out = args.json or args.results / f"indexing-{result['machine']['device']}.json"
    common.publish(out, result, report(result))
    return result


if __name__ == "__main__":
    main()
