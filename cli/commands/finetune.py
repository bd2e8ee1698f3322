"""``vsearch finetune``: adapt the backbone to a labelled catalog; export a model folder."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..main import EXIT_OK, EXIT_PARTIAL, add_model_args, settings_from
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
    p.add_argument(
        "--objective",
        choices=["auto", "instance", "label"],
        default="auto",
        help="instance: a product's shopper photos match it (works with one photo per "
        "product); label: items sharing --label-column match; auto: label when a label "
        "column is given or a product column groups photos, else instance",
    )
    p.add_argument(
        "--strategy",
        choices=["head", "partial", "full"],
        default="",
        help="head (frozen backbone), partial (the last layers too; default for instance), "
        "full (label objective only)",
    )
    p.add_argument(
        "--label-column",
        help="label objective: the column of items that match (e.g. product); instance: "
        "optional product groups (several photos of one product); 'id' = every item its own",
    )
    p.add_argument("--id-column", help="manifest id column")
    p.add_argument("--image-column", help="manifest image column")
    p.add_argument("--epochs", type=int, default=0, help="maximum epochs (default per strategy)")
    p.add_argument(
        "--lr",
        type=float,
        default=0.0,
        help="learning rate of the head (0: per objective and strategy; instance partial "
        "3e-4, instance head 1e-3, label head 2e-3, label partial 1e-3, label full 5e-4)",
    )
    p.add_argument(
        "--backbone-lr-scale", type=float, default=0.1, help="backbone rate = lr * this (top layer)"
    )
    p.add_argument("--layer-decay", type=float, default=0.8, help="rate factor per layer down")
    p.add_argument(
        "--unfreeze",
        type=int,
        default=0,
        help="partial: backbone stages (instance, default 1) or layer groups (label, default 4) "
        "to train",
    )
    p.add_argument(
        "--dim",
        type=int,
        default=256,
        help="label: size of the new head (instance keeps the width)",
    )
    p.add_argument("--head", choices=["linear", "mlp"], default="linear")
    p.add_argument("--loss", choices=["supcon", "triplet"], default="supcon")
    p.add_argument("--temperature", type=float, default=0.1, help="supcon temperature")
    p.add_argument("--margin", type=float, default=0.2, help="triplet margin")
    p.add_argument(
        "--ce-weight", type=float, default=0.0, help="add N x label cross-entropy (0: off)"
    )
    p.add_argument(
        "--batch-size", type=int, default=0, help="training batch (default per strategy)"
    )
    p.add_argument("--per-label", type=int, default=4, help="items per label in each batch")
    p.add_argument("--patience", type=int, default=0, help="early stopping patience (epochs)")
    p.add_argument("--holdout", type=float, default=0.2, help="eval's held-out query fraction")
    p.add_argument("--val-fraction", type=float, default=0.2, help="validation fraction")
    p.add_argument("--max-items", type=int, default=0, help="train on a seeded sample of N items")
    p.add_argument(
        "--extra-train",
        metavar="SOURCE",
        help="a second labelled catalog used for training only (more labelled photos)",
    )
    p.add_argument("--no-augment", action="store_true", help="label partial/full: no augmentation")
    p.add_argument("--views", type=int, default=12, help="instance: shopper views per item")
    p.add_argument("--eval-views", type=int, default=4, help="instance: judging views per item")
    p.add_argument(
        "--backgrounds",
        metavar="DIR",
        help="instance: your own background photos for the shopper views (default: bundled "
        "real photos)",
    )
    p.add_argument(
        "--distill", type=float, default=1.0, help="instance: pull towards the base's vectors"
    )
    p.add_argument(
        "--category-weight",
        type=float,
        default=0.0,
        help="instance: weight of a same-category term (a weak signal; 0 = off)",
    )
    p.add_argument(
        "--no-refit",
        action="store_true",
        help="instance: export the model trained without the held-out items (no refit on all)",
    )
    p.add_argument("--cache-mb", type=int, default=2048, help="instance: memory for cached views")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("--workers", type=int, help="decode worker processes")
    p.add_argument("--threads", type=int, help="torch threads")
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    add_model_args(p)
    p.set_defaults(handler=run)


def _options(args: argparse.Namespace) -> Any:
    from training.finetune import FinetuneOptions

    return FinetuneOptions(
        objective=args.objective,
        strategy=args.strategy,
        label_column=args.label_column,
        id_column=args.id_column,
        image_column=args.image_column,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        patience=args.patience,
        backbone_lr_scale=args.backbone_lr_scale,
        layer_decay=args.layer_decay,
        unfreeze=args.unfreeze,
        dim=args.dim,
        head=args.head,
        loss=args.loss,
        temperature=args.temperature,
        margin=args.margin,
        ce_weight=args.ce_weight,
        per_label=args.per_label,
        holdout=args.holdout,
        val_fraction=args.val_fraction,
        max_items=args.max_items,
        extra_train=args.extra_train,
        augment=not args.no_augment,
        views=args.views,
        eval_views=args.eval_views,
        backgrounds=args.backgrounds,
        distill=args.distill,
        category_weight=args.category_weight,
        refit=not args.no_refit,
        cache_mb=args.cache_mb,
        seed=args.seed,
    )


def run(args: argparse.Namespace) -> int:
    from training.finetune import finetune

    args.batch_size_train, args.batch_size = args.batch_size, None
    settings = settings_from(args)
    args.batch_size = args.batch_size_train
    options = _options(args)
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
