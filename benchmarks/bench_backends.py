"""Inference backends on this machine: speed, vector agreement, query latency, decoding, cold CLI.

In one run, round-robin so that a drift of the machine's load hits every backend alike:
  1. forward: images/s of the image tower on preprocessed pixels, batch 1 and 8, every core
     (short slices, round-robin: median and best slice), and its CPU cost on one thread
     (core-ms per image by process CPU time: the figure least disturbed by other load);
  2. agreement: cosine of each backend's vectors to PyTorch's on real photos (min and mean),
     and how many of each photo's 5 nearest photos by PyTorch's vectors it finds again;
  3. query embedding: p50 / p90 ms to embed a photo the way the server does: decode (JPEG
     draft), preprocess, embed, in blocks of one backend (a server runs one): a phone photo
     (4032 x 3024 JPEG bytes) whole ("query") and with the default nine crops ("nine"), a
     480 x 360 JPEG whole ("web"), and the phone photo as the Python client and the shop
     page send it ("sent": reduced to 1024 px, JPEG; :func:`search.images.upload.shrink_upload`,
     whose own cost on the sending side is ``client_shrink_ms``, and ``sent_cos`` the cosine
     of its vector to the whole photo's), whole and with the nine crops ("sent_nine": a
     shopper's page search by default);
  4. decoding: ms per catalog JPEG for PIL full decode, PIL draft (the default) and
     simplejpeg (libjpeg-turbo, DCT-scaled), each followed by the same resize and crop;
  5. cold CLI: wall time of ``vsearch search photo.jpg`` in a fresh process per backend,
     the export already cached (what a shell user sees).
Prints Markdown tables and writes JSON (default bench-results/backends-<device>.json).

    python -m benchmarks.bench_backends              # ~5 minutes on a 2-core CPU
    python -m benchmarks.bench_backends --quick      # a smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import common, workload

log = logging.getLogger("bench_backends")
MODEL = "builtin:efficientnet-lite0"


def configs(precisions: bool) -> list[tuple[str, str]]:
    """(backend, precision) pairs to measure: every installed one, bf16 where the CPU has it."""
    from search.backends import RUNTIMES, installed

    out = [("torch", "fp32")] + [(b, "fp32") for b in RUNTIMES if installed(b)]
    if precisions and installed("openvino"):
        from search.backends.runtimes import openvino_core

        if "BF16" in openvino_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            out.append(("openvino", "bf16"))
    return out


def load(backend: str, precision: str, cache_dir: str, threads: int) -> Any:
    from search.embedder import Embedder

    t0 = time.perf_counter()
    emb = Embedder(
        MODEL, device="cpu", precision=precision, cache_dir=cache_dir, backend=backend,
        threads=threads,
    )  # fmt: skip
    log.info("%s/%s loaded in %.2fs", backend, precision, time.perf_counter() - t0)
    return emb


def forward_rate(emb: Any, pixels: np.ndarray, batch: int, min_s: float) -> float:
    emb.embed_tensors(pixels[:batch])  # warm-up
    done, t0 = 0, time.perf_counter()
    while done < 2 * batch or time.perf_counter() - t0 < min_s:
        emb.embed_tensors(pixels[:batch])
        done += batch
    return done / (time.perf_counter() - t0)


def core_ms(pairs: list[tuple[str, str]], cache_dir: str, pixels: np.ndarray, rounds: int) -> list:
    """CPU core-ms per image of the forward pass on ONE thread (batch 8), by process CPU time.

    Single-threaded, the CPU time an image costs hardly depends on what else runs on the
    machine (no thread pool spinning at barriers while its partner thread is descheduled),
    so this is the fairest comparison on a shared machine; N free cores give at most
    N x 1000 / core_ms images/s.
    """
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    embs = {f"{b}/{p}": load(b, p, cache_dir, 1) for b, p in pairs}
    costs: dict[str, list[float]] = {name: [] for name in embs}
    try:
        for _ in range(rounds):
            for name, emb in embs.items():
                emb.embed_tensors(pixels)  # warm-up
                t0 = time.process_time()
                for _ in range(3):
                    emb.embed_tensors(pixels)
                costs[name].append(1000 * (time.process_time() - t0) / (3 * len(pixels)))
    finally:
        torch.set_num_threads(saved)
    base = min(costs["torch/fp32"])
    return [
        {"backend": n, "core_ms_min": min(c), "core_ms_median": common.median(c),
         "speedup_vs_torch": base / min(c)}
        for n, c in costs.items()
    ]  # fmt: skip


def phone_photo(size: tuple[int, int] = (4032, 3024)) -> bytes:
    """A JPEG (quality 90) made from a real photo: 4032 x 3024 is what a phone uploads."""
    from PIL import Image

    base = Image.fromarray(workload.skimage_photos()[0]).convert("RGB")
    buf = io.BytesIO()
    base.resize(size, Image.Resampling.BICUBIC).save(buf, "JPEG", quality=90)
    return buf.getvalue()


QUERY_BLOCK = 10  # queries measured in a row per backend and photo
QUERY_WARMUP = 3  # discarded at the start of each block


def query_ms(emb: Any, photo: bytes, scheme: str) -> float:
    """One query embedding as the searcher does it (search/searcher.py), in ms."""
    from search.images import open_image
    from search.query_crops import SCHEMES, crops

    t0 = time.perf_counter()
    if scheme == "none":
        emb.embed_images([photo])
    else:
        smallest = min(side for side, _, _ in SCHEMES[scheme])
        img = open_image(photo, draft_size=int(emb.info.image_size / smallest) + 1)
        emb.embed_images(crops(img, scheme))
    return 1000 * (time.perf_counter() - t0)


def decode_options(paths: list[Path], size: int) -> list[dict[str, Any]]:
    """ms per image: decode + resize + centre crop, by decoder (one process, one thread)."""
    from PIL import Image

    from search.images import Preprocess, open_image

    pre = Preprocess.of({"mean": [0.5] * 3, "std": [0.5] * 3}, size)
    assert pre is not None
    datas = [p.read_bytes() for p in paths]

    def pil_full(data: bytes) -> Any:
        return pre.pixels(open_image(data))

    def pil_draft(data: bytes) -> Any:
        return pre.pixels(open_image(data, draft_size=size))

    options = {"PIL full decode": pil_full, "PIL draft (default)": pil_draft}
    try:
        import simplejpeg

        def simple(data: bytes) -> Any:
            arr = simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=size, min_width=size)
            return pre.pixels(Image.fromarray(arr))

        options["simplejpeg (DCT-scaled)"] = simple
    except ImportError:
        log.info("simplejpeg not installed: skipped")
    rows = []
    ref = [pil_draft(d).astype(np.int16) for d in datas[:8]]
    for name, fn in options.items():
        fn(datas[0])
        t0 = time.perf_counter()
        for data in datas:
            fn(data)
        ms = 1000 * (time.perf_counter() - t0) / len(datas)
        diff = max(
            float(np.abs(fn(d).astype(np.int16) - r).mean())
            for d, r in zip(datas, ref, strict=False)
        )
        rows.append({"decoder": name, "ms_per_image": ms, "mean_abs_diff_vs_draft": diff})
    return rows


def precision_check(emb: Any, paths: list[Path], manifest: Path) -> Any:
    """``vsearch check-precision`` for bf16 on the workload's photos (recorded in the cache)."""
    pre = emb.runtime_preprocess
    pixels = np.stack([pre.pixels(_open(p, emb.info.image_size)) for p in paths])
    check = emb.check_precision(pixels, "bf16", catalog=str(manifest))
    log.info("precision check: %s", check.describe())
    return check


def cold_cli(backends: list[str], photo: Path, catalog: Path, cache_dir: str, runs: int) -> dict:
    """Median wall seconds of a fresh ``vsearch search`` process per backend."""
    env = {**os.environ, "VSEARCH_CACHE_DIR": cache_dir, "HF_HUB_OFFLINE": "1"}
    with tempfile.TemporaryDirectory(prefix="vsearch-cold-") as tmp:
        env["VSEARCH_URI"] = str(Path(tmp) / "cold.db")
        cli = [sys.executable, "-m", "cli.main", "-q"]
        subprocess.run([*cli, "index", str(catalog)], env=env, check=True, capture_output=True)
        times: dict[str, list[float]] = {b: [] for b in backends}
        for _ in range(runs):
            for b in backends:
                t0 = time.perf_counter()
                subprocess.run(
                    [*cli, "search", str(photo), "--backend", b, "-k", "5", "--json"],
                    env=env, check=True, capture_output=True,
                )  # fmt: skip
                times[b].append(time.perf_counter() - t0)
    return {b: {"median_s": common.median(t), "runs": t} for b, t in times.items()}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from search.backends.precision_check import neighbour_recall
    from search.embedder import Embedder
    from search.images.upload import shrink_upload

    cache_dir = args.cache_dir or str(Path(tempfile.gettempdir()) / "vsearch-bench-cache")
    threads = args.threads or common.cores()
    spec = workload.Spec(args.count, args.min_side, args.max_side)
    manifest = workload.build(args.results / f"workload-{args.count}-{args.min_side}", spec)
    paths = sorted((manifest.parent / "img").rglob("*.jpg"))
    result: dict[str, Any] = {
        "machine": common.machine("cpu") | {"threads": threads},
        "workload": workload.describe(manifest.parent),
    }
    pairs = configs(not args.quick)
    embs = {f"{b}/{p}": load(b, p, cache_dir, threads) for b, p in pairs if p == "fp32"}
    if ("openvino", "bf16") in pairs:  # a lossy precision runs only after its recall check
        check = precision_check(embs["openvino/fp32"], paths[: args.check_images], manifest)
        result["precision_check"] = dataclasses.asdict(check) | {"passed": check.passed}
        if check.passed:
            embs["openvino/bf16"] = load("openvino", "bf16", cache_dir, threads)
        else:
            log.warning("bf16 not measured: %s", check.describe())
    ref = embs["torch/fp32"]
    result["model"] = ref.info.describe()
    result["chosen_by_auto"] = Embedder(
        MODEL, device="cpu", cache_dir=cache_dir, backend="auto", threads=threads
    ).backend
    pixels = np.stack([np.asarray(ref.preprocess(_open(p, 224))) for p in paths[:8]])
    # 1. forward, round-robin
    rates: dict[tuple[str, int], list[float]] = {}
    for _ in range(args.repeats):
        for name, emb in embs.items():
            for batch in (1, 8):
                r = forward_rate(emb, pixels, batch, args.min_s)
                rates.setdefault((name, batch), []).append(r)
    result["core_ms"] = core_ms(pairs, cache_dir, pixels, max(2, args.repeats // 3))
    # 2. agreement on real photos (the workload's and scikit-image's)
    photos = [_open(p, 0) for p in paths[: args.agree]]
    ref_vecs = ref.embed_images(photos)
    # 3. query embedding, interleaved
    photo, web = phone_photo(), phone_photo((480, 360))
    sent = shrink_upload(photo)
    # web: a 480 x 360 JPEG, whole; sent: the phone photo as the client uploads it
    # sent_nine: what a shopper's page search embeds by default (the photo as sent, nine crops)
    shots = {"none": photo, "nine": photo, "web": web, "sent": sent, "sent_nine": sent}
    whole = "none", "web", "sent"
    lat: dict[tuple[str, str], list[float]] = {}
    # In blocks of one backend and one kind (a server runs one backend), round-robin over
    # the blocks for the drift; each block starts with discarded queries, so the threads of
    # the backend measured before (torch's OpenMP, ONNX Runtime's spinning ones) are idle.
    # Query by query round-robin, every runtime paid for the others' thread pools: OpenVINO
    # 10.7 against 8.3-8.7 ms for the phone photo as sent, ONNX Runtime 17.8 against 13.7.
    rounds = max(1, args.queries // QUERY_BLOCK)
    for _ in range(rounds):
        for name, emb in embs.items():
            for kind, shot in shots.items():
                scheme = "none" if kind in whole else kind.removeprefix("sent_")
                for _ in range(QUERY_WARMUP):
                    query_ms(emb, shot, scheme)
                for _ in range(max(1, args.queries // rounds)):
                    lat.setdefault((name, kind), []).append(query_ms(emb, shot, scheme))
    shrink_ms = []
    for _ in range(max(5, args.queries // 3)):
        t0 = time.perf_counter()
        shrink_upload(photo)
        shrink_ms.append(1000 * (time.perf_counter() - t0))
    result["client_shrink_ms"] = common.median(shrink_ms)
    rows = []
    torch_fw = common.median(rates[("torch/fp32", 8)])
    for name, emb in embs.items():
        vecs = emb.embed_images(photos)
        cos = (vecs * ref_vecs).sum(axis=1)
        both = emb.embed_images([photo, sent])
        fw8 = common.median(rates[(name, 8)])
        best8 = max(rates[(name, 8)])
        rows.append(
            {
                "backend": name,
                "batch1_img_s": common.median(rates[(name, 1)]),
                "batch8_img_s": fw8,
                "vs_torch": fw8 / torch_fw,
                # the best slice: the least disturbed by other load on the machine
                "batch1_best_img_s": max(rates[(name, 1)]),
                "batch8_best_img_s": best8,
                "best_vs_torch": best8 / max(rates[("torch/fp32", 8)]),
                "web_min_ms": min(lat[(name, "web")]),
                "cos_min": float(cos.min()),
                "cos_mean": float(cos.mean()),
                # the metric of vsearch check-precision: each photo's 5 nearest by torch's
                "recall_at5_vs_torch": neighbour_recall(ref_vecs, vecs, 5)
                if len(vecs) > 1
                else 1.0,
                "query_p50_ms": common.percentile(lat[(name, "none")], 50),
                "query_p90_ms": common.percentile(lat[(name, "none")], 90),
                "web_p50_ms": common.percentile(lat[(name, "web")], 50),
                "web_p90_ms": common.percentile(lat[(name, "web")], 90),
                "nine_p50_ms": common.percentile(lat[(name, "nine")], 50),
                "nine_p90_ms": common.percentile(lat[(name, "nine")], 90),
                "sent_p50_ms": common.percentile(lat[(name, "sent")], 50),
                "sent_p90_ms": common.percentile(lat[(name, "sent")], 90),
                "sent_cos": float(both[0] @ both[1]),
                "sent_nine_p50_ms": common.percentile(lat[(name, "sent_nine")], 50),
                "sent_nine_p90_ms": common.percentile(lat[(name, "sent_nine")], 90),
            }
        )
    result["backends"] = rows
    # 4. decoding
    result["decode"] = decode_options(paths[: args.decode_count], 224)
    # 5. cold CLI
    if args.cold_runs:
        with tempfile.TemporaryDirectory(prefix="vsearch-cold-photo-") as tmp:
            shot = Path(tmp) / "photo.jpg"
            shot.write_bytes(photo)
            catalog = workload.prefix(manifest, min(args.count, 32))
            names = sorted({b for b, _ in pairs}) + ["auto"]
            result["cold_cli"] = cold_cli(names, shot, catalog, cache_dir, args.cold_runs)
    result["machine"]["loadavg_end"] = common.loadavg()
    return result


def _open(path: Path, draft: int) -> Any:
    from search.images import open_image

    return open_image(path, draft_size=draft or None)


def _describe_check(record: dict[str, Any]) -> str:
    from search.backends.precision_check import PrecisionCheck

    return PrecisionCheck(**{k: v for k, v in record.items() if k != "passed"}).describe()


def report(result: dict[str, Any]) -> str:
    m = result["machine"]
    parts = [
        f"machine: {m['cores']} cores, {m['cpu']}, {m['threads']} threads, "
        f"load {m['loadavg_start']} -> {m.get('loadavg_end', '')}; model {result['model']}; "
        f"auto chose: {result['chosen_by_auto']}",
        *(
            [f"bf16's recall check (its gate): {_describe_check(result['precision_check'])}"]
            if "precision_check" in result
            else []
        ),
        common.table(
            "Backends (forward img/s on preprocessed pixels; query = embed one phone photo)",
            result["backends"],
            [
                "backend",
                "batch1_img_s",
                "batch8_img_s",
                "vs_torch",
                "batch1_best_img_s",
                "batch8_best_img_s",
                "best_vs_torch",
                "cos_min",
                "cos_mean",
                "recall_at5_vs_torch",
                "query_p50_ms",
                "query_p90_ms",
                "web_p50_ms",
                "web_p90_ms",
                "web_min_ms",
                "nine_p50_ms",
                "nine_p90_ms",
                "sent_p50_ms",
                "sent_p90_ms",
                "sent_cos",
                "sent_nine_p50_ms",
                "sent_nine_p90_ms",
            ],
        ),  # fmt: skip
        f"the client's shrink of the phone photo before upload: {result['client_shrink_ms']:.1f} ms",
        common.table(
            "Forward cost on one thread: CPU core-ms per image (batch 8, process CPU time)",
            result.get("core_ms", []),
            ["backend", "core_ms_min", "core_ms_median", "speedup_vs_torch"],
        ),
        common.table(
            "Decoding a catalog JPEG + resize + crop (one thread)",
            result["decode"],
            ["decoder", "ms_per_image", "mean_abs_diff_vs_draft"],
        ),
    ]
    if "cold_cli" in result:
        rows = [{"backend": b, **v} for b, v in result["cold_cli"].items()]
        parts.append(
            common.table("Cold `vsearch search photo.jpg` (wall s)", rows, ["backend", "median_s"])
        )
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    common.offline()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=64, help="workload JPEGs")
    p.add_argument("--min-side", type=int, default=800)
    p.add_argument("--max-side", type=int, default=1200)
    p.add_argument("--threads", type=int, default=0, help="inference threads (0: every core)")
    p.add_argument("--repeats", type=int, default=10, help="forward slices per backend")
    p.add_argument("--min-s", type=float, default=0.5, help="seconds per forward slice")
    p.add_argument("--queries", type=int, default=30)
    p.add_argument("--agree", type=int, default=32, help="photos in the agreement check")
    p.add_argument(
        "--check-images", type=int, default=64, help="photos in bf16's recall check (its gate)"
    )
    p.add_argument("--decode-count", type=int, default=64)
    p.add_argument("--cold-runs", type=int, default=3)
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--results", type=Path, default=common.RESULTS)
    p.add_argument("--json", type=Path, default=None, help="output file")
    p.add_argument("--quick", action="store_true", help="tiny smoke run")
    args = p.parse_args(argv)
    if args.quick:
        args.count, args.min_side, args.max_side = 8, 256, 320
        args.repeats, args.min_s, args.queries, args.agree = 1, 0.05, 2, 4
        args.decode_count, args.cold_runs = 4, 0
    common.setup_logging("bench_backends", "search")
    result = run(args)
    out = args.json or args.results / "backends-cpu.json"
    common.publish(out, result, report(result))
    return result


if __name__ == "__main__":
    main()
