"""Fine-tuning options: one frozen dataclass, with per-strategy defaults."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from search.errors import ConfigError

STRATEGIES = ("head", "partial", "full")
HEADS = ("linear", "mlp")
LOSSES = ("supcon", "triplet")
# strategy -> (epochs, learning rate of the new head, batch size, patience)
DEFAULTS = {
    "head": (100, 2e-3, 256, 10),
    "partial": (4, 1e-3, 32, 2),
    "full": (4, 5e-4, 32, 2),
}


@dataclass(frozen=True)
class FinetuneOptions:
    """How to adapt a backbone to a catalog.

    strategy: ``head`` (frozen backbone, features computed once, a projection head trained
        on them), ``partial`` (the last ``unfreeze`` layer groups of the backbone train at
        ``lr * backbone_lr_scale``, decayed by ``layer_decay`` per group going down, and the
        head at ``lr``) or ``full`` (every layer trains, at the same low, layer-wise rates).
    holdout / seed: the queries ``vsearch eval`` holds out with the same values are never
        trained on; ``val_fraction`` of the rest validates (early stopping on recall@1).
    ce_weight: adds ``ce_weight`` x cross-entropy of a training-only cosine classifier over
        the labels (temperature ``temperature``) to the metric loss; 0 disables it.
    extra_train: a second labelled catalog (manifest or folder, same label column) whose
        items only train: more labelled photos than the searched catalog holds. Items that
        share an id or an image (content hash) with the main catalog are dropped, so no
        held-out query or validation photo leaks into training.
    """

    strategy: str = "head"
    label_column: str | None = None
    id_column: str | None = None
    image_column: str | None = None
    epochs: int = 0  # 0: the strategy's default
    lr: float = 0.0  # 0: the strategy's default (the new head's rate)
    batch_size: int = 0  # 0: the strategy's default
    patience: int = 0  # 0: the strategy's default (epochs without a better val recall@1)
    backbone_lr_scale: float = 0.1
    layer_decay: float = 0.8
    unfreeze: int = 4
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
    seed: int = 0

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"unknown strategy {self.strategy!r} ({', '.join(STRATEGIES)})")
        if self.head not in HEADS:
            raise ConfigError(f"unknown head {self.head!r} ({', '.join(HEADS)})")
        if self.loss not in LOSSES:
            raise ConfigError(f"unknown loss {self.loss!r} ({', '.join(LOSSES)})")
        if self.ce_weight < 0:
            raise ConfigError("ce-weight must be at least 0")
        if self.dim < 2 or self.per_label < 2 or self.unfreeze < 0:
            raise ConfigError("dim and per-label must be at least 2, unfreeze at least 0")

    def resolved(self) -> FinetuneOptions:
        """A copy with the strategy's defaults filled in."""
        epochs, lr, batch, patience = DEFAULTS[self.strategy]
        return dataclasses.replace(
            self,
            epochs=self.epochs or epochs,
            lr=self.lr or lr,
            batch_size=self.batch_size or batch,
            patience=self.patience or patience,
        )

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)
