"""Fine-tuning options: one frozen dataclass, with per-strategy defaults."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from search.errors import ConfigError

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
    ("instance", "partial"): (40, 3e-4, 64, 6),
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
    category_weight: weight of a same-category term (a weak, optional signal; 0 = off).
    refit: after a model passed the verdict, train it again on every item (the exported
        model); the verdict itself always comes from items never trained on.
    extra_train: a second labelled catalog (manifest or folder, same label column) whose
        items only train: more labelled photos than the searched catalog holds. Items that
        share an id or an image (content hash) with the main catalog are dropped, so no
        held-out query or validation photo leaks into training.
    """

    objective: str = "auto"
    strategy: str = ""  # "": partial for instance, head for label
    label_column: str | None = None
    id_column: str | None = None
    image_column: str | None = None
    epochs: int = 0  # 0: the strategy's default
    lr: float = 0.0  # 0: the strategy's default (the new head's rate)
    batch_size: int = 0  # 0: the strategy's default
    patience: int = 0  # 0: the strategy's default (epochs without a better val recall@1)
    backbone_lr_scale: float = 0.1
    layer_decay: float = 0.8
    unfreeze: int = 0  # 0: the objective's default (instance 1 stage, label 4 groups)
    dim: int = 256
    head: str = "linear"
    loss: str = "supcon"
    temperature: float = 0.1
    margin: float = 0.2
    ce_weight: float = 0.0
    per_label: int = 4
    weight_decay: float = 1e-4
    holdout: float = 0.2
    val_fraction: float = 0.2
    max_items: int = 0  # 0: every training item; else a seeded sample (CPU-sized runs)
    extra_train: str | None = None
    augment: bool = True
    views: int = 12
    eval_views: int = 4
    backgrounds: str | None = None
    distill: float = 1.0
    category_weight: float = 0.0
    refit: bool = True
    cache_mb: int = 2048
    seed: int = 0

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
        if self.distill < 0 or self.category_weight < 0:
            raise ConfigError("distill and category-weight must be at least 0")
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
