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
import json
import logging
import time
from pathlib import Path

from indexer.evaluation import evaluate, plot_recall
from indexer.finetune import FinetuneOptions, finetune
from indexer.fmnist import write_catalog
from search.config import Settings

log = logging.getLogger("transfer_fmnist")


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
    ap.add_argument("--cache-dir", default="", help="feature/model cache (default: OUT/cache)")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", force=True)
    for noisy in ("PIL", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    out: Path = args.out
    settings = Settings(cache_dir=args.cache_dir or str(out / "cache"), device=args.device)
    manifest = out / "catalog" / "catalog.csv"
    if not manifest.is_file():
        write_catalog(out / "catalog", train=args.train, test=args.test, seed=args.seed)
    results: dict[str, object] = {"catalog": str(manifest), "args": vars(args) | {"out": str(out)}}
    models = ["builtin:efficientnet-lite0"]
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    base = evaluate(
        manifest, settings, models, label_column="category", holdout=args.holdout, seed=args.seed
    )
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

    t0 = time.perf_counter()
    final = evaluate(
        manifest, settings, models, label_column="category", holdout=args.holdout, seed=args.seed
    )
    timings["eval_all"] = time.perf_counter() - t0
    print(final.table(), flush=True)
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
        f"  vsearch eval {manifest} --label-column category --holdout {args.holdout} "
        + " ".join(f"--model {m}" for m in models)
    )


if __name__ == "__main__":
    main()
