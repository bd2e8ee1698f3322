"""``vsearch finetune``: adapt the backbone to a labelled catalog; export a model folder."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..cli import EXIT_OK, EXIT_PARTIAL, add_model_args, settings_from
from .output import print_json, progress_reporter


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "finetune",
        help="adapt the backbone to a labelled catalog (head, partial or full fine-tuning)",
        description="Train on a labelled catalog (same label = should match) and write an "
        "open_clip model folder usable as --model local-dir:OUTPUT. Exit code 1 (and a "
        "warning) when the result is not better than its base on the validation split.",
    )
    p.add_argument("source", help="labelled catalog: a .csv / .jsonl manifest or a folder")
    p.add_argument("--output", "-o", required=True, help="model folder to write")
    p.add_argument("--strategy", choices=["head", "partial", "full"], default="head")
    p.add_argument("--label-column", help="label column (default: product, category, folder)")
    p.add_argument("--id-column", help="manifest id column")
    p.add_argument("--image-column", help="manifest image column")
    p.add_argument("--epochs", type=int, default=0, help="maximum epochs (default per strategy)")
    p.add_argument("--lr", type=float, default=0.0, help="learning rate of the new head")
    p.add_argument(
        "--backbone-lr-scale", type=float, default=0.1, help="backbone rate = lr * this (top layer)"
    )
    p.add_argument("--layer-decay", type=float, default=0.8, help="rate factor per layer down")
    p.add_argument(
        "--unfreeze", type=int, default=4, help="partial: backbone layer groups to train"
    )
    p.add_argument("--dim", type=int, default=256, help="embedding size of the new head")
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
    p.add_argument("--no-augment", action="store_true", help="partial/full: no augmentation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("--workers", type=int, help="decode worker processes")
    p.add_argument("--threads", type=int, help="torch threads")
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    add_model_args(p)
    p.set_defaults(handler=run)


def _options(args: argparse.Namespace) -> Any:
    from indexer.finetune import FinetuneOptions

    return FinetuneOptions(
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
        seed=args.seed,
    )


def run(args: argparse.Namespace) -> int:
    from indexer.finetune import finetune

    args.batch_size_train, args.batch_size = args.batch_size, None
    settings = settings_from(args)
    args.batch_size = args.batch_size_train
    options = _options(args)
    feat_cb, feat_close = progress_reporter(not args.quiet, "features")
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
            "vsearch: warning: the fine-tuned model is NOT better than its base on the "
            "validation split; do not promote it",
            file=sys.stderr,
        )
        return EXIT_PARTIAL
    print(
        f"next: vsearch eval {args.source} --model {settings.model} --model "
        f"local-dir:{report.output}",
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
