"""``vsearch eval``: how well models find products (instance or label task); index recall."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from training.evaluation.options import EvalOptions

from ..flags import add_flags
from ..main import EXIT_OK, add_settings_args, add_store_args, settings_from
from .output import print_json, progress_reporter

if TYPE_CHECKING:
    from search.config import Settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="how well models find products on a catalog (recall@k with intervals); index "
        "(HNSW) vs exact recall",
        description='--task instance ("find this product", the default without product '
        "groups): simulated shopper photos of held-out items (a seeded split, other "
        "backgrounds and distortions than training uses) search the whole catalog; the right "
        "answer is the item itself. --task label: held-out items search the rest; a result "
        "is relevant when it shares the query's label (--label-column product or category). "
        "With several --model flags, models are compared on the same queries (paired test "
        "against the first). --index also measures the live collection's approximate index "
        "against exact search.",
    )
    p.add_argument(
        "source", nargs="?", help="labelled catalog: a .csv / .jsonl manifest or a folder"
    )
    p.add_argument(
        "--task",
        choices=["auto", "instance", "label"],
        default="auto",
        help="instance: find the photographed item; label: find items with its label; auto: "
        "label when --label-column is given or a product column groups photos, else instance",
    )
    add_flags(p, EvalOptions)  # --label-column, --holdout, --seed, --views, ...: one edit each
    p.add_argument("--index", action="store_true", help="also measure the live collection's index")
    p.add_argument("--ann-queries", type=int, default=200, help="queries for --index")
    p.add_argument("--ann-k", type=int, default=10, help="k for --index recall")
    p.add_argument("--out", default="eval-results", help="folder for report.json and recall.png")
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    add_settings_args(p, "indexing")
    add_store_args(p)
    g = p.add_argument_group("model")
    g.add_argument(
        "--model",
        action="append",
        help="model to evaluate (builtin:NAME, local-dir:PATH, NAME:PRETRAINED); repeat to "
        "compare models on the same queries (default: VSEARCH_MODEL or the built-in)",
    )
    g.add_argument("--pretrained", help="pretrained tag for a bare open_clip model name")
    g.add_argument("--device", help="auto, cpu, cuda (env VSEARCH_DEVICE)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from search.errors import ConfigError
    from training.evaluation import EvalOptions, EvalReport, evaluate, evaluate_index, plot_recall

    from ..flags import build

    models = list(args.model or [])
    args.model = None
    settings = settings_from(args)
    if not args.source and not args.index:
        raise ConfigError("give a labelled catalog to evaluate, or --index for the live collection")
    if args.source and _task(args, settings) == "instance":
        return _run_instance(args, settings, models)
    if args.source:
        progress, close_bars = _model_bars(not args.quiet, "embedding")
        try:
            report = evaluate(
                args.source, settings, models, build(EvalOptions, args), progress=progress
            )
        finally:
            close_bars()
    else:
        report = EvalReport("", "", 0, 0, args.holdout, args.seed)
    if args.index:
        report.ann = evaluate_index(
            settings, k=args.ann_k, queries=args.ann_queries, seed=args.seed
        )
    if args.source and not any(m.result.queries for m in report.models):
        raise ConfigError(
            f"no held-out item has another item with its {report.label_column!r} label, so "
            "there is nothing to find: every label has one item. Use --task instance (find "
            "the photographed item), or a label column that groups items"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report.to_dict(), indent=2, default=str))
    written = [out / "report.json"]
    if report.models:
        written.append(plot_recall(report, out / "recall.png"))
    if args.json:
        print_json(report.to_dict())
    else:
        print(report.table() if report.models else report.table().splitlines()[-1])
        print("wrote " + ", ".join(str(w) for w in written), file=sys.stderr)
    return EXIT_OK


def _task(args: argparse.Namespace, settings: Settings) -> str:
    if args.task != "auto":
        return args.task
    from indexer.catalog import load_catalog
    from training.evaluation.labels import choose_task

    items = load_catalog(
        args.source,
        id_column=args.id_column,
        image_column=args.image_column,
        numeric_columns=(),
        allowed_roots=settings.indexing.allowed_roots,
    ).items
    return choose_task(items, args.label_column)


def _run_instance(args: argparse.Namespace, settings: Settings, models: list[str]) -> int:
    from training.evaluation import EvalOptions
    from training.evaluation.instance import evaluate_instance

    from ..flags import build

    progress, close_bars = _model_bars(not args.quiet, "shopper photos")
    try:
        report = evaluate_instance(
            args.source, settings, models, build(EvalOptions, args), progress=progress
        )
    finally:
        close_bars()
    data = report.to_dict()
    if args.index:
        from training.evaluation import evaluate_index

        data["ann"] = evaluate_index(
            settings,
            k=args.ann_k,
            queries=args.ann_queries,
            seed=args.seed,
        ).to_dict()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(data, indent=2, allow_nan=False))
    if args.json:
        print_json(data)
    else:
        print(report.table())
        print(f"wrote {out / 'report.json'}", file=sys.stderr)
    return EXIT_OK


def _model_bars(
    enabled: bool, what: str
) -> tuple[Callable[[str, int, int], None], Callable[[], None]]:
    """A progress bar per model (``progress(model, done, total)``) and a close-all."""
    bars: dict[str, tuple] = {}

    def progress(spec: str, done: int, total: int) -> None:
        if spec not in bars:
            bars[spec] = progress_reporter(enabled, f"{what} ({spec})")
        cb = bars[spec][0]
        if cb:
            cb(done, total)

    def close() -> None:
        for _, close_one in bars.values():
            close_one()

    return progress, close
