"""Transfer-learning experiment on Fashion-MNIST with the offline backbone (CPU-sized).

1. write a class-balanced catalog of Fashion-MNIST photos (default 3000 train + 1000 test),
2. evaluate the pretrained built-in model (held-out queries: 25 % of the catalog, seed 0),
3. fine-tune: ``head`` (features computed once) and ``partial`` (last layer groups unfrozen,
   a seeded sample of the training items, few epochs),
4. evaluate every model on the SAME held-out queries; print a table, write JSON and a plot.

    HF_HUB_OFFLINE=1 .venv/bin/python -m benchmarks.transfer_fmnist OUT_DIR
    # then: docs/transfer-learning.md records the figures

The equivalent CLI sequence is printed at the end (what a user would type).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.fmnist import CLASSES, balanced_sample, load_split, write_catalog
from search.config import Settings
from training.evaluation import EvalOptions, evaluate, plot_recall
from training.finetune import FinetuneOptions, finetune

log = logging.getLogger("transfer_fmnist")


def write_extra_train(target: Path, count: int, exclude: Path, seed: int = 0) -> Path:
    """A second manifest of ``count`` train-split photos that are NOT in ``exclude``'s catalog.

    Used with ``finetune(..., extra_train=...)``: more labelled photos for training only; the
    evaluated catalog (and so its held-out queries) stays exactly the same.
    """
    with exclude.open(newline="", encoding="utf-8") as fh:
        taken = {row["id"] for row in csv.DictReader(fh)}
    x, y = load_split("train")
    free = np.array([i for i in range(len(y)) if f"fmnist-train-{i:05d}" not in taken])
    picked = free[balanced_sample(y[free], count, seed + 1)]
    (target / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in picked:
        rel = f"images/train-{i:05d}.png"
        if not (target / rel).is_file():
            Image.fromarray(x[i]).save(target / rel)
        rows.append({"id": f"fmnist-train-{i:05d}", "image": rel, "category": CLASSES[int(y[i])]})
    manifest = target / "catalog.csv"
    with manifest.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["id", "image", "category"])
        writer.writeheader()
        writer.writerows(rows)
    log.info("wrote %d extra training photos to %s", len(rows), target)
    return manifest


def paired_top1(
    manifest: Path, settings: Settings, models: list[str], holdout: float, seed: int
) -> dict[str, dict[str, float]]:
    """Per held-out query, is the top-1 answer right? Each model against the first one.

    ``fixed`` / ``broken``: queries the base got wrong and the model right, and the
    reverse; ``p``: two-sided exact sign test (McNemar) on those discordant queries.
    """
    from training.evaluation import metrics
    from training.evaluation.features import extract, extractor_for
    from training.evaluation.labels import holdout_mask, load_labelled
    from training.evaluation.run import load_embedder

    catalog = load_labelled(manifest, "category")
    labels = np.asarray(catalog.labels, dtype=object)
    queries = np.nonzero(holdout_mask(catalog.ids, holdout, seed))[0]
    hits = {}
    for spec in models:
        extractor = extractor_for(load_embedder(spec, settings))
        feats = extract(catalog.items, extractor, settings)
        assert feats.ok.all(), "every Fashion-MNIST photo decodes"
        vectors = extractor.finish(feats.vectors)
        nn, _ = metrics.exact_knn(vectors[queries], vectors, 1, self_index=queries)
        hits[spec] = metrics.relevance(nn, labels[queries], labels)[:, 0]
    base = hits[models[0]]
    out = {}
    for spec in models[1:]:
        fixed, broken = int((~base & hits[spec]).sum()), int((base & ~hits[spec]).sum())
        n, k = fixed + broken, min(fixed, broken)
        p = min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n) if n else 1.0
        out[spec] = {"queries": int(queries.size), "fixed": fixed, "broken": broken, "p": p}
        print(f"{spec}: top-1 fixed {fixed}, broken {broken} of {queries.size}, p = {p:.2g}")
    return out


def parse_grid(text: str) -> list[dict[str, object]]:
    """``"linear:256:0,mlp:512:1"`` -> head options (head, dim, ce_weight) per entry."""
    grid = []
    for entry in filter(None, text.split(",")):
        head, dim, ce = entry.split(":")
        grid.append({"head": head, "dim": int(dim), "ce_weight": float(ce)})
    return grid


def extra_head_runs(
    manifest: Path, settings: Settings, out: Path, args: argparse.Namespace
) -> tuple[str, dict[str, object]]:
    """Train one ``head`` per grid entry with the extra training photos; pick by VALIDATION.

    The held-out queries play no part in the choice: only the chosen model is evaluated on
    them afterwards.
    """
    extra = write_extra_train(out / "extra", args.extra_train, manifest, args.seed)
    runs: dict[str, object] = {}
    best: tuple[tuple[float, float], str] | None = None
    for cfg in parse_grid(args.head_grid):
        name = f"head-extra-{cfg['head']}{cfg['dim']}-ce{cfg['ce_weight']:g}"
        opts = FinetuneOptions(
            strategy="head",
            label_column="category",
            holdout=args.holdout,
            seed=args.seed,
            extra_train=str(extra),
            **cfg,  # type: ignore[arg-type]
        )
        report = finetune(manifest, settings, out / "models" / name, opts, overwrite=True)
        print(report.table(), flush=True)
        runs[name] = report.to_dict()
        score = (report.after.recall.get(1, 0.0), report.after.map_at.get(10, 0.0))
        if best is None or score > best[0]:
            best = (score, f"local-dir:{report.output}")
    assert best is not None, "--head-grid is empty"
    return best[1], {"extra_manifest": str(extra), "runs": runs, "chosen": best[1]}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("out", type=Path)
    ap.add_argument("--train", type=int, default=3000, help="photos from the train split")
    ap.add_argument("--test", type=int, default=1000, help="photos from the test split")
    ap.add_argument("--holdout", type=float, default=0.25, help="held-out query fraction")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--partial-items", type=int, default=1200, help="train sample for partial")
    ap.add_argument("--partial-epochs", type=int, default=3)
    ap.add_argument("--strategies", default="head,partial")
    ap.add_argument(
        "--extra-train",
        type=int,
        default=0,
        help="N more train-split photos (not in the catalog) to train heads on (0: none)",
    )
    ap.add_argument(
        "--head-grid",
        default="linear:256:0,linear:512:1,mlp:512:0,mlp:512:1",
        help="with --extra-train: head:dim:ce_weight entries, the best on VALIDATION is kept",
    )
    ap.add_argument("--cache-dir", default="", help="feature/model cache (default: OUT/cache)")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", force=True)
    for noisy in ("PIL", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    out: Path = args.out
    settings = Settings.of(cache_dir=args.cache_dir or str(out / "cache"), device=args.device)
    manifest = out / "catalog" / "catalog.csv"
    if not manifest.is_file():
        write_catalog(out / "catalog", train=args.train, test=args.test, seed=args.seed)
    results: dict[str, object] = {"catalog": str(manifest), "args": vars(args) | {"out": str(out)}}
    models = ["builtin:efficientnet-lite0"]
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    asked = EvalOptions(label_column="category", holdout=args.holdout, seed=args.seed)
    base = evaluate(manifest, settings, models, asked)
    timings["eval_base"] = time.perf_counter() - t0
    print(base.table(), flush=True)

    for strategy in [s for s in args.strategies.split(",") if s]:
        opts = FinetuneOptions(
            strategy=strategy,
            label_column="category",
            holdout=args.holdout,
            seed=args.seed,
            max_items=args.partial_items if strategy != "head" else 0,
            epochs=args.partial_epochs if strategy != "head" else 0,
        )
        t0 = time.perf_counter()
        report = finetune(manifest, settings, out / "models" / strategy, opts, overwrite=True)
        timings[f"finetune_{strategy}"] = time.perf_counter() - t0
        print(report.table(), flush=True)
        results[f"finetune_{strategy}"] = report.to_dict()
        models.append(f"local-dir:{report.output}")

    if args.extra_train:
        t0 = time.perf_counter()
        chosen, results["extra_train"] = extra_head_runs(manifest, settings, out, args)
        timings["finetune_head_extra_grid"] = time.perf_counter() - t0
        models.append(chosen)

    t0 = time.perf_counter()
    final = evaluate(manifest, settings, models, asked)
    timings["eval_all"] = time.perf_counter() - t0
    print(final.table(), flush=True)
    results["paired_top1_vs_base"] = paired_top1(
        manifest, settings, models, args.holdout, args.seed
    )
    plot_recall(final, out / "recall.png", title="Fashion-MNIST: pretrained vs fine-tuned")
    results["eval"] = final.to_dict()
    results["timings_s"] = {k: round(v, 1) for k, v in timings.items()}
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    print(f"timings (s): {results['timings_s']}")
    print(f"wrote {out / 'results.json'} and {out / 'recall.png'}")
    print(
        "CLI equivalent:\n"
        f"  vsearch eval {manifest} --label-column category --holdout {args.holdout}\n"
        f"  vsearch finetune {manifest} --label-column category --holdout {args.holdout} "
        f"--strategy head -o {out}/models/head\n"
        f"  vsearch finetune {manifest} --label-column category --holdout {args.holdout} "
        f"--strategy partial --max-items {args.partial_items} --epochs {args.partial_epochs} "
        f"-o {out}/models/partial\n"
        + (
            f"  vsearch finetune {manifest} --label-column category --holdout {args.holdout} "
            f"--strategy head --extra-train {out}/extra/catalog.csv --head HEAD --dim DIM "
            f"--ce-weight W -o {out}/models/head-extra-...  (one per --head-grid entry)\n"
            if args.extra_train
            else ""
        )
        + f"  vsearch eval {manifest} --label-column category --holdout {args.holdout} "
        + " ".join(f"--model {m}" for m in models)
    )


if __name__ == "__main__":
    main()
