"""Peer comparison: ``vsearch index`` vs clip-retrieval's ``inference``, same images, same model.

Makes N real-photo-like JPEGs once (``benchmarks.workload``, ~600 px by default), then times
the whole process, each run in a fresh process, round-robin over the repeats:
  a) ``vsearch index <folder>`` into a fresh Milvus Lite database, default settings
     (backend auto);
  b) the same with ``--backend torch``;
  c) clip-retrieval's ``inference`` on the same folder (its defaults: batch 256, 4 decode
     workers, sequential distributor; text off), run by clip-retrieval's own Python
     through the adapter below.
One untimed warm-up round first (OS file cache, vsearch's export and calibration cache).
Then the vectors are compared: cosine between clip-retrieval's saved embeddings and ours
for the same files (clip-retrieval saves float16), and, on 32 of them, our Embedder's
vectors with open_clip's exact preprocessing as clip-retrieval uses it (same model: ~1.0;
the indexer's faster JPEG decode and resize explain the rest of any gap).

The adapter (``--clip-retrieval-adapter``, run with clip-retrieval's interpreter) registers
a ``vsearch:`` prefix in clip-retrieval's model loader (all_clip's registry) that builds our
open_clip model folder with that environment's open_clip, in ``eval()`` mode (open_clip's
factory leaves it in train mode, where BatchNorm would use batch statistics), with the
folder's own preprocessing, then calls clip-retrieval's normal ``inference`` entry point.

    python -m benchmarks.bench_peer --clip-retrieval-python /path/to/cr-venv/bin/python
    python -m benchmarks.bench_peer --quick ...          # a few images, one repeat
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from . import common, workload

ROOT = Path(__file__).resolve().parents[1]
ENV_PYTHON = "VSEARCH_BENCH_CLIP_RETRIEVAL_PYTHON"
CR_DEFAULT = "clip-retrieval (defaults: batch 256, 4 workers)"
ADAPTER_PREFIX = "vsearch:"
DEFAULT_JSON = Path("docs/bench/peer-cpu.json")

log = logging.getLogger("bench_peer")
EXACT = "open_clip's exact preprocessing, 32 files (our Embedder)"


# -- pure logic ----------------------------------------------------------------------------


def summarise(
    runs: Mapping[str, Sequence[float]], baselines: Mapping[str, str] | None = None
) -> list[dict]:
    """One row per variant: median and each run's wall seconds, and for each baseline
    (column name -> variant) its median wall time / this one's (> 1: faster than it)."""
    medians = {n: statistics.median(w) for n, w in runs.items() if w}
    rows = []
    for name, walls in runs.items():
        if not walls:
            continue
        row: dict[str, Any] = {
            "variant": name,
            "median_s": round(medians[name], 2),
            "runs_s": " / ".join(f"{w:.1f}" for w in walls),
        }
        for column, base in (baselines or {}).items():
            if base in medians:
                row[column] = round(medians[base] / medians[name], 2)
        rows.append(row)
    return rows


def cosine_agreement(
    ours: Mapping[str, Sequence[float]], theirs: Mapping[str, Sequence[float]]
) -> dict[str, Any]:
    """Cosine between the vectors of the same keys: min, mean, how many were compared,
    and how many keys only one side has."""
    import numpy as np

    common_keys = sorted(set(ours) & set(theirs))
    out: dict[str, Any] = {
        "compared": len(common_keys),
        "only_ours": len(set(ours) - set(theirs)),
        "only_theirs": len(set(theirs) - set(ours)),
    }
    if not common_keys:
        return out
    a = np.asarray([ours[k] for k in common_keys], dtype=np.float64)
    b = np.asarray([theirs[k] for k in common_keys], dtype=np.float64)
    a /= np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b /= np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    cos = (a * b).sum(axis=1)
    out.update(cos_min=round(float(cos.min()), 5), cos_mean=round(float(cos.mean()), 5))
    if len(common_keys) > 1:  # for scale: the same vectors paired with another image's
        other = (a * np.roll(b, 1, axis=0)).sum(axis=1)
        out["cos_other_image_mean"] = round(float(other.mean()), 5)
    out["worst"] = common_keys[int(cos.argmin())]
    return out


def warmup_seconds(stdout: str) -> float | None:
    """clip-retrieval's own "done warming up in Xs" line (its model warm-up at batch size)."""
    for line in stdout.splitlines():
        if line.startswith("done warming up in "):
            try:
                return round(float(line.removeprefix("done warming up in ").rstrip("s")), 2)
            except ValueError:
                return None
    return None


# -- the adapter (runs in clip-retrieval's environment) ------------------------------------


def _load_vsearch_folder(folder: str, use_jit: bool, device: str, cache_path: Any) -> tuple:
    """all_clip loader: our open_clip model folder, built with this environment's open_clip."""
    import open_clip
    import torch
    from all_clip.open_clip import OpenClipWrapper

    path = Path(folder)
    config = json.loads((path / "open_clip_config.json").read_text())
    name = f"vsearch-peer-{path.name}"
    open_clip.factory._MODEL_CONFIGS[name] = config["model_cfg"]  # as add_model_config does
    pp = config.get("preprocess_cfg", {})
    model, _, preprocess = open_clip.create_model_and_transforms(
        name,
        pretrained=str(path / "open_clip_model.safetensors"),
        device=device,
        jit=False,
        image_mean=pp.get("mean"),
        image_std=pp.get("std"),
        image_interpolation=pp.get("interpolation"),
        image_resize_mode=pp.get("resize_mode"),
    )
    model.eval()  # the factory leaves it in train mode (BatchNorm on batch statistics)
    wrapped = OpenClipWrapper(inner_model=model, device=device).to(device).eval()
    context = int(config["model_cfg"]["text_cfg"].get("context_length", 77))

    def tokenizer(texts: Sequence[str]) -> torch.Tensor:
        # image-only model: its text tower is a placeholder with a tiny vocabulary; text is
        # disabled in the run, only clip-retrieval's warm-up encodes its fake captions
        return torch.zeros((len(texts), context), dtype=torch.long)

    return wrapped, preprocess, tokenizer


def adapter_main(argv: Sequence[str]) -> None:
    """``--clip-retrieval-adapter FOLDER OUTPUT MODEL_DIR [--batch-size N] [--workers N]``."""
    p = argparse.ArgumentParser(prog="bench_peer --clip-retrieval-adapter")
    p.add_argument("folder")
    p.add_argument("output")
    p.add_argument("model_dir")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--workers", type=int, default=None)
    args = p.parse_args(argv)
    import all_clip.main as registry
    from clip_retrieval.clip_inference import clip_inference

    # the registry is scanned in order and its last prefix "" matches every name: ours first
    loaders = dict(registry._CLIP_REGISTRY)
    registry._CLIP_REGISTRY.clear()
    registry._CLIP_REGISTRY[ADAPTER_PREFIX] = _load_vsearch_folder
    registry._CLIP_REGISTRY.update(loaders)
    extra = {"batch_size": args.batch_size} if args.batch_size else {}
    if args.workers is not None:
        extra["num_prepro_workers"] = args.workers
    clip_inference(
        input_dataset=args.folder,
        output_folder=args.output,
        input_format="files",
        enable_text=False,
        enable_image=True,
        clip_model=ADAPTER_PREFIX + str(Path(args.model_dir).resolve()),
        **extra,
    )


# -- the benchmark (runs in vsearch's environment) -----------------------------------------


def timed(cmd: list[str], env: Mapping[str, str], log_file: Path) -> dict[str, Any]:
    """Run ``cmd`` in a fresh process; wall seconds and CPU seconds (it and its children)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=dict(env), cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    log_file.write_text(f"$ {' '.join(cmd)}\n{proc.stdout}\n--- stderr\n{proc.stderr}")
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise RuntimeError(f"{cmd[0]} exited {proc.returncode}: " + " | ".join(tail))
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "stdout": proc.stdout}


def vsearch_program() -> list[str]:
    """The ``vsearch`` console script beside this interpreter (what a user runs)."""
    script = Path(sys.executable).with_name("vsearch")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "cli.main"]


def child_env(cache_dir: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1", PYTHONUNBUFFERED="1")
    if cache_dir:
        env["VSEARCH_CACHE_DIR"] = cache_dir
    return env


def model_folder(cache_dir: str | None) -> Path:
    """Our default model's open_clip folder in the model cache (built on first use)."""
    from search.builtin_model import builtin_model_dir
    from search.config import DEFAULT_MODEL, Settings

    if not DEFAULT_MODEL.startswith("builtin:"):
        raise SystemExit(
            f"the peer comparison needs the built-in default model, not {DEFAULT_MODEL}"
        )
    cache = Path(cache_dir) if cache_dir else Path(Settings().model.cache_dir)
    return builtin_model_dir(cache, DEFAULT_MODEL.removeprefix("builtin:"))


def our_vectors(db: Path) -> tuple[dict[str, list[float]], str]:
    """Every indexed image's vector by its id (path relative to the folder), and the
    backend the collection records."""
    from search.config import Settings
    from search.store import MilvusStore

    store = MilvusStore(Settings.of(uri=str(db)))
    try:
        name = store.require("catalog")
        ids = list(store.fingerprints(name))
        rows = store.get(name, ids, vectors=True)
        info = store.provenance(name)
    finally:
        store.close()
    backend = f"{info.backend} {info.precision}".strip() if info else ""
    return {r["id"]: list(r["vector"]) for r in rows}, backend


def their_vectors(out: Path, folder: Path) -> dict[str, list[float]]:
    """clip-retrieval's saved image embeddings by path relative to ``folder``."""
    import numpy as np
    import pandas as pd

    vectors: dict[str, list[float]] = {}
    for npy in sorted((out / "img_emb").glob("img_emb_*.npy")):
        meta = (
            out / "metadata" / npy.name.replace("img_emb_", "metadata_").replace(".npy", ".parquet")
        )
        emb = np.load(npy).astype(np.float32)
        paths = pd.read_parquet(meta)["image_path"].tolist()
        for path, vec in zip(paths, emb, strict=True):
            vectors[Path(path).resolve().relative_to(folder.resolve()).as_posix()] = vec.tolist()
    return vectors


def clip_retrieval_variants(python: str, folder: Path, mdir: Path, which: str) -> dict:
    """clip-retrieval's defaults and/or the batch and workers vsearch uses on this CPU."""
    from indexer.tuning import device_defaults

    cmd = [python, "-m", "benchmarks.bench_peer", "--clip-retrieval-adapter", str(folder),
           "OUT", str(mdir)]  # fmt: skip
    same = device_defaults("cpu")
    out = {}
    if which in ("both", "default"):
        out[CR_DEFAULT] = cmd
    if which in ("both", "same"):
        name = f"clip-retrieval (batch {same.batch_size}, {same.workers} worker)"
        out[name] = [*cmd, "--batch-size", str(same.batch_size), "--workers", str(same.workers)]
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-peer-", dir=args.work_dir))
    spec = workload.Spec(args.count, args.min_side, args.max_side)
    manifest = workload.build(args.images or tmp / "workload", spec)
    folder = manifest.parent / "img"
    result: dict[str, Any] = {
        "machine": common.machine("cpu"),
        "workload": workload.describe(manifest.parent),
    }
    env = child_env(args.cache_dir)
    variants: dict[str, list[str]] = {
        "vsearch index (auto)": [*vsearch_program(), "index", str(folder)],
        "vsearch index --backend torch": [
            *vsearch_program(), "index", str(folder), "--backend", "torch"
        ],
    }  # fmt: skip
    python = args.clip_retrieval_python or os.environ.get(ENV_PYTHON, "")
    if python and Path(python).is_file():
        mdir = model_folder(args.cache_dir)
        variants.update(clip_retrieval_variants(python, folder, mdir, args.clip_retrieval))
        result["model_folder"] = str(mdir)
    else:
        print(f"clip-retrieval skipped: no interpreter (--clip-retrieval-python or ${ENV_PYTHON})")
    peers = [n for n in variants if n.startswith("clip-retrieval")]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    outputs: dict[str, Path] = {}
    for round_no in range(-args.warmup, args.repeats):
        for k, (name, cmd) in enumerate(variants.items()):
            if round_no < 0 and name == CR_DEFAULT:
                continue  # its warm-up round would only repeat minutes of compute
            target = tmp / f"r{round_no}-{k}"
            if name in peers:
                full = [target.as_posix() if c == "OUT" else c for c in cmd]
            else:
                full = [*cmd, "--uri", f"{target}.db"]
            rec = timed(full, env, tmp / f"r{round_no}-{k}.log")
            label = "warm-up" if round_no < 0 else f"run {round_no + 1}"
            log.info("%s: %s: %.1f s wall, %.1f s CPU", label, name, rec["wall_s"], rec["cpu_s"])
            if round_no < 0:
                continue
            if name in peers:
                rec["model_warmup_s"] = warmup_seconds(rec["stdout"])
            rec.pop("stdout")
            rec["loadavg"] = common.loadavg()
            runs[name].append(rec)
            outputs.setdefault(name, target if name in peers else Path(f"{target}.db"))
    result["runs"] = runs
    baselines = {f"x_vs_peer{i + 1}": n for i, n in enumerate(peers)}
    walls = {n: [r["wall_s"] for r in rs] for n, rs in runs.items()}
    result["summary"] = summarise(walls, baselines)
    result["baselines"] = baselines
    for row in result["summary"]:
        row["cpu_s"] = round(statistics.median(r["cpu_s"] for r in runs[row["variant"]]), 1)
        row["img_s"] = round(args.count / row["median_s"], 1)
    result["agreement"] = agreement(outputs, peers, folder, args.cache_dir)
    result["settings"] = {
        "count": args.count,
        "repeats": args.repeats,
        "warmup_rounds": args.warmup,
        "min_side": args.min_side,
        "max_side": args.max_side,
        "clip_retrieval": "inference entry point, folder input, text off; defaults batch_size "
        "256, num_prepro_workers 4 unless the variant says",
        "commands": {n: " ".join(c) for n, c in variants.items()},
    }
    result["logs"] = str(tmp)
    return result


def agreement(
    outputs: Mapping[str, Path], peers: Sequence[str], folder: Path, cache_dir: str | None
) -> list[dict]:
    """Our vectors (each vsearch variant's first run) vs the first peer's, same files."""
    peer = next((p for p in peers if p in outputs), None)
    if peer is None:
        return []
    theirs = their_vectors(outputs[peer], folder)
    rows = []
    for name, db in outputs.items():
        if name not in peers:
            ours, backend = our_vectors(db)
            rows.append({"variant": name, "vs": peer, "backend": backend,
                         **cosine_agreement(ours, theirs)})  # fmt: skip
    sample = [r["worst"] for r in rows if "worst" in r] + sorted(theirs)[:32]
    exact = exact_preprocessing_vectors(folder, list(dict.fromkeys(sample))[:32], cache_dir)
    rows.append({"variant": EXACT, "vs": peer, "backend": "torch fp32",
                 **cosine_agreement(exact, theirs)})  # fmt: skip
    return rows


def exact_preprocessing_vectors(
    folder: Path, keys: Sequence[str], cache_dir: str | None
) -> dict[str, list[float]]:
    """Our Embedder's vectors with open_clip's own preprocessing (full decode, PIL resize),
    as clip-retrieval does it: tells the model apart from the indexer's faster decoding
    (JPEG draft decode and its own resize)."""
    import numpy as np
    import torch
    from PIL import Image

    from search.config import DEFAULT_MODEL
    from search.embedder import Embedder

    emb = Embedder(DEFAULT_MODEL, device="cpu", backend="torch", cache_dir=cache_dir)
    pixels = torch.stack([emb.preprocess(Image.open(folder / k).convert("RGB")) for k in keys])
    vectors = np.asarray(emb.embed_tensors(pixels))
    return {k: vectors[i].tolist() for i, k in enumerate(keys)}


def report(result: dict[str, Any]) -> str:
    m, w = result["machine"], result["workload"]
    parts = [
        f"machine: {m['cores']} cores, {m['cpu']}, load {m['loadavg_start']} -> "
        f"{m.get('loadavg_end', common.loadavg())}",
        f"workload: {w['images']} JPEGs, mean {w['mean_kb']} KB, "
        f"~{w['mean_width']}x{w['mean_height']} px",
    ]
    cols = ["variant", "median_s", "runs_s", "img_s", "cpu_s", *result["baselines"]]
    title = "Whole-process wall clock, seconds (fresh process each run)"
    parts.append(common.table(title, result["summary"], cols))
    for column, peer in result["baselines"].items():
        parts.append(f"{column}: {peer}'s median wall / this row's")
    if result["agreement"]:
        cols = ["variant", "backend", "compared", "cos_min", "cos_mean", "cos_other_image_mean"]
        title = "Same model? cosine of our vectors vs clip-retrieval's, same files"
        rows = [{k: f"{v:.5f}" if k.startswith("cos") else v for k, v in r.items()}
                for r in result["agreement"]]  # fmt: skip
        parts.append(common.table(title, rows, cols))
    for name, rs in result["runs"].items():
        if rs and "model_warmup_s" in rs[0]:
            warm = [r["model_warmup_s"] for r in rs]
            parts.append(f"{name}: its own model warm-up (inside the wall time): {warm} s")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--clip-retrieval-adapter"]:
        adapter_main(argv[1:])
        return None
    common.offline()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=512)
    p.add_argument("--min-side", type=int, default=540)
    p.add_argument("--max-side", type=int, default=700)
    p.add_argument(
        "--clip-retrieval",
        choices=["both", "default", "same"],
        default="both",
        help="its defaults, vsearch's CPU batch/workers, or both",
    )
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    p.add_argument(
        "--clip-retrieval-python",
        default=None,
        help=f"python of a venv with clip-retrieval installed (env {ENV_PYTHON})",
    )
    p.add_argument("--images", type=Path, default=None, help="workload folder (reused)")
    p.add_argument("--cache-dir", default=None, help="vsearch model cache (default: its own)")
    p.add_argument("--work-dir", default=None, help="where the databases and outputs go")
    p.add_argument("--json", type=Path, default=None, help=f"output (default {DEFAULT_JSON})")
    p.add_argument("--quick", action="store_true", help="a few small images, one repeat")
    args = p.parse_args(argv)
    if args.quick:
        args.count, args.repeats, args.warmup = min(args.count, 6), 1, 0
        args.min_side, args.max_side, args.clip_retrieval = 200, 260, "same"
    common.setup_logging("bench_peer")
    out = args.json or (common.RESULTS / "peer-quick.json" if args.quick else DEFAULT_JSON)
    result = run(args)
    common.publish(out, result, report(result))
    return result


if __name__ == "__main__":
    main()
