"""``vsearch finetune``: adapt the backbone to a labelled catalog; export a model folder."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..flags import add_flags, build
from ..main import EXIT_OK, EXIT_PARTIAL, add_model_args, add_settings_args, settings_from
from .output import print_json, progress_reporter


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "finetune",
        help="adapt the backbone to a catalog: find-this-product (instance) or labels",
        description="Adapt the model to a catalog and write an open_clip model folder usable "
        "as --model local-dir:OUTPUT. Without product groups (one photo per product, the "
        "common case) the model learns that simulated shopper photos of an item are that "
        "item (--objective instance); with a label column it learns that items sharing a "
        "label match (--objective label). The result is judged on items never trained on: "
        "exit code 1 (and a warning) unless it is significantly better than its base; "
        "`vsearch promote` refuses such a model.",
    )
    p.add_argument("source", help="catalog: a .csv / .jsonl manifest or a folder")
    p.add_argument("--output", "-o", required=True, help="model folder to write")
    add_flags(p.add_argument_group("adaptation"), _options_class())
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    add_settings_args(p, "indexing", skip=("batch_size",))  # --batch-size: training batch
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    add_model_args(p)
    p.set_defaults(handler=run)


def _options_class() -> type:
    from training.finetune.options import FinetuneOptions

    return FinetuneOptions


def run(args: argparse.Namespace) -> int:
    from training.finetune import finetune

    settings = settings_from(args, skip=("batch_size",))  # --batch-size is the training batch
    options = build(_options_class(), args)
    feat_cb, feat_close = progress_reporter(not args.quiet, "photos and views")
    train_cb, train_close = _train_bar(not args.quiet)
    try:
        report = finetune(
            args.source,
            settings,
            args.output,
            options,
            overwrite=args.overwrite,
            progress=train_cb,
            feature_progress=feat_cb,
        )
    finally:
        feat_close()
        train_close()
    if args.json:
        print_json(report.to_dict())
    else:
        print(report.table())
        print(f"model: local-dir:{report.output}")
    if not report.improved:
        print(
            "vsearch: warning: the adapted model is NOT significantly better than its base on "
            "items it never trained on; `vsearch promote` will refuse it",
            file=sys.stderr,
        )
        return EXIT_PARTIAL
    print(
        f"next: vsearch index {args.source} --model local-dir:{report.output} --new-version, "
        "then vsearch promote the new collection",
        file=sys.stderr,
    )
    return EXIT_OK


def _train_bar(enabled: bool) -> tuple[Any, Any]:
    """A tqdm bar per epoch on a terminal, one log line per epoch otherwise."""
    import logging

    if not enabled:
        return None, lambda: None
    log = logging.getLogger("vsearch")
    state: dict[str, Any] = {"bar": None, "epoch": 0}
    tty = sys.stderr.isatty()

    def update(ev: Any) -> None:
        if tty:
            from tqdm import tqdm

            if state["epoch"] != ev.epoch or state["bar"] is None:
                if state["bar"] is not None:
                    state["bar"].close()
                state["bar"] = tqdm(
                    total=ev.steps, desc=f"epoch {ev.epoch}/{ev.epochs}", file=sys.stderr
                )
                state["epoch"] = ev.epoch
            bar = state["bar"]
            bar.update(ev.step - bar.n)
            post = {"loss": f"{ev.loss:.4f}"} if ev.loss is not None else {}
            if ev.val_recall1 is not None:
                post["val_R@1"] = f"{ev.val_recall1:.4f}"
            bar.set_postfix(post)
        elif ev.phase == "validate":
            log.info(
                "epoch %d/%d: loss %.4f, validation recall@1 %.4f",
                ev.epoch,
                ev.epochs,
                ev.loss or 0.0,
                ev.val_recall1 or 0.0,
            )

    def close() -> None:
        if state["bar"] is not None:
            state["bar"].close()

    return update, close
