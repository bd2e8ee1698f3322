"""Fine-tuning options: one frozen dataclass, with per-strategy defaults.

Each field is declared once with its help text; ``vsearch finetune`` derives its flags from
these fields (``cli/flags.py``), so a new option is one edit here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from search.errors import ConfigError
from search.options import option

from ..evaluation.options import JUDGING_VIEWS

STRATEGIES = ("head", "partial", "full")
OBJECTIVES = ("auto", "instance", "label")
HEADS = ("linear", "mlp")
LOSSES = ("supcon", "triplet")
# (objective, strategy) -> (epochs, learning rate of the new head, batch size, patience)
DEFAULTS = {
    ("label", "head"): (100, 2e-3, 256, 10),
    ("label", "partial"): (4, 1e-3, 32, 2),
    ("label", "full"): (4, 5e-4, 32, 2),
    ("instance", "head"): (60, 1e-3, 64, 8),
    ("instance", "partial"): (64, 3e-4, 64, 16),
}


@dataclass(frozen=True)
class FinetuneOptions:
    """How to adapt a backbone to a catalog.

    objective: ``instance`` (the default when the catalog has no product groups): a catalog
        photo and its simulated shopper photos are the same product, every other item a
        negative; works with one photo per product. ``label``: items sharing a label
        (``label_column``, e.g. ``product``) are positives. ``auto``: ``label`` when a label
        column is given (``id`` means instance) or a ``product`` column groups items, else
        ``instance``.
    strategy: ``head`` (frozen backbone, features computed once, a projection head trained
        on them), ``partial`` (the last ``unfreeze`` layer groups of the backbone train at
        ``lr * backbone_lr_scale``, decayed by ``layer_decay`` per group going down, and the
        head at ``lr``) or ``full`` (every layer trains, at the same low, layer-wise rates).
    holdout / seed: the queries ``vsearch eval`` holds out with the same values are never
        trained on; ``val_fraction`` of the rest validates (early stopping on recall@1).
    ce_weight: adds ``ce_weight`` x cross-entropy of a training-only cosine classifier over
        the labels (temperature ``temperature``) to the metric loss; 0 disables it.
    views / eval_views: simulated shopper photos per item for training / for judging
        (instance objective); ``backgrounds`` a folder of the user's background photos
        (default: real photos that install with scikit-image).
    distill: weight of keeping the catalog photos' embeddings near the base's (cosine).
    entropy: weight of the Kozachenko-Leonenko entropy term (SSCD): each item is pushed
        away from its nearest other item in the batch, so look-alikes keep distinct vectors.
    category_weight: weight of a same-category term (a weak, optional signal; 0 = off).
    refit: after a model passed the verdict, train it again on every item (the exported
        model); the verdict itself always comes from items never trained on.
    extra_train: a second labelled catalog (manifest or folder, same label column) whose
        items only train: more labelled photos than the searched catalog holds. Items that
        share an id or an image (content hash) with the main catalog are dropped, so no
        held-out query or validation photo leaks into training.
    """

    objective: str = option(
        "auto",
        "instance: a product's shopper photos match it (works with one photo per product); "
        "label: items sharing --label-column match; auto: label when a label column is given "
        "or a product column groups photos, else instance",
        choices=OBJECTIVES,
    )
    strategy: str = option(
        "",
        "head (frozen backbone), partial (the last layers too; default for instance), "
        "full (label objective only)",
        choices=STRATEGIES,
    )
    label_column: str | None = option(
        None,
        "label objective: the column of items that match (e.g. product); instance: optional "
        "product groups (several photos of one product); 'id' = every item its own",
    )
    id_column: str | None = option(None, "manifest id column")
    image_column: str | None = option(None, "manifest image column")
    epochs: int = option(0, "maximum epochs (0: per objective and strategy)")
    lr: float = option(
        0.0,
        "learning rate of the head (0: per objective and strategy; instance partial 3e-4, "
        "instance head 1e-3, label head 2e-3, label partial 1e-3, label full 5e-4)",
    )
    batch_size: int = option(0, "training batch (0: per objective and strategy)")
    patience: int = option(0, "early stopping patience in epochs (0: per strategy)")
    backbone_lr_scale: float = option(0.1, "backbone rate = lr x this (top layer)")
    layer_decay: float = option(0.8, "rate factor per layer group going down")
    unfreeze: int = option(
        0,
        "partial: backbone stages (instance, default 1) or layer groups (label, default 4) "
        "to train (0: the default)",
    )
    dim: int = option(256, "label: size of the new head (instance keeps the width)")
    head: str = option("linear", "label: the projection head", choices=HEADS)
    loss: str = option("supcon", "label: the metric loss", choices=LOSSES)
    temperature: float = option(0.1, "supcon temperature")
    margin: float = option(0.2, "triplet margin")
    ce_weight: float = option(0.0, "add N x label cross-entropy (0: off)")
    per_label: int = option(4, "label: items per label in each batch")
    weight_decay: float = option(1e-4, "AdamW weight decay")
    holdout: float = option(0.2, "eval's held-out query fraction (never trained on)")
    val_fraction: float = option(0.2, "validation fraction of the rest")
    max_items: int = option(0, "train on a seeded sample of N items (0: all)")
    extra_train: str | None = option(
        None,
        "a second labelled catalog used for training only (more labelled photos)",
        metavar="SOURCE",
    )
    augment: bool = option(True, "label partial/full: augment the training photos")
    views: int = option(12, "instance: shopper views per item")
    eval_views: int = option(JUDGING_VIEWS, "instance: judging views per item")
    backgrounds: str | None = option(
        None,
        "instance: your own background photos for the shopper views (default: bundled real photos)",
        metavar="DIR",
    )
    distill: float = option(1.0, "instance: pull towards the base's vectors")
    entropy: float = option(
        2.0, "instance: weight of the KoLeo entropy term that spreads look-alikes apart (0 = off)"
    )
    category_weight: float = option(
        0.0, "instance: weight of a same-category term (a weak signal; 0 = off)"
    )
    refit: bool = option(
        True,
        "instance: after the verdict, train again on every item (the exported model); "
        "--no-refit exports the model trained without the held-out items",
    )
    cache_mb: int = option(2048, "instance: memory for cached views (MB)")
    seed: int = option(0, "seed of the split, the views and the training")

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"unknown objective {self.objective!r} ({', '.join(OBJECTIVES)})")
        if self.strategy and self.strategy not in STRATEGIES:
            raise ConfigError(f"unknown strategy {self.strategy!r} ({', '.join(STRATEGIES)})")
        if self.head not in HEADS:
            raise ConfigError(f"unknown head {self.head!r} ({', '.join(HEADS)})")
        if self.loss not in LOSSES:
            raise ConfigError(f"unknown loss {self.loss!r} ({', '.join(LOSSES)})")
        if self.ce_weight < 0:
            raise ConfigError("ce-weight must be at least 0")
        if self.dim < 2 or self.per_label < 2 or self.unfreeze < 0:
            raise ConfigError("dim and per-label must be at least 2, unfreeze at least 0")
        if self.views < 2 or self.eval_views < 1:
            raise ConfigError("views must be at least 2 and eval-views at least 1")
        if self.distill < 0 or self.category_weight < 0 or self.entropy < 0:
            raise ConfigError("distill, entropy and category-weight must be at least 0")
        if self.objective == "instance" and self.strategy == "full":
            raise ConfigError(
                "the instance objective trains the last stages on cached views: use "
                "--strategy partial (default) or head; full fine-tuning needs labels"
            )

    def resolved(self, objective: str | None = None) -> FinetuneOptions:
        """A copy with the objective's and strategy's defaults filled in."""
        objective = objective or self.objective
        if objective == "auto":
            raise ConfigError("resolve the objective before the defaults")
        strategy = self.strategy or ("partial" if objective == "instance" else "head")
        if (objective, strategy) not in DEFAULTS:
            raise ConfigError(
                f"strategy {strategy!r} is not available for the {objective} objective"
            )
        epochs, lr, batch, patience = DEFAULTS[(objective, strategy)]
        unfreeze = self.unfreeze or (1 if objective == "instance" else 4)
        return dataclasses.replace(
            self,
            objective=objective,
            strategy=strategy,
            unfreeze=0 if strategy == "head" else unfreeze,
            epochs=self.epochs or epochs,
            lr=self.lr or lr,
            batch_size=self.batch_size or batch,
            patience=self.patience or patience,
        )

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)
