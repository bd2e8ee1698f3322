"""A vision tower cut in two: a frozen bottom whose outputs are cached, a trainable top.

For timm EfficientNet-family trunks (the built-in EfficientNet-Lite0 among them) the cut
lies between stages: ``unfreeze`` = how many of the last stages train, with the final 1x1
convolution, its BatchNorm's affine weights and the head. The bottom runs once per image
view (its outputs are cached), so an epoch costs only the top's forward and backward.
``unfreeze`` 0 trains the head alone on the pooled trunk features (any timm tower).

BatchNorm statistics never change (the top is always in eval mode): small CPU batches of
augmented views would corrupt them, and keeping them keeps what ImageNet taught.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from search.errors import ConfigError

log = logging.getLogger(__name__)
STAGED = ("conv_stem", "bn1", "blocks", "conv_head", "bn2", "global_pool")


def identity_head(visual: Any) -> None:
    """Initialise the tower's linear projection to the identity (the base model exactly)."""
    proj = getattr(visual.head, "proj", None)
    if not isinstance(proj, nn.Linear) or proj.in_features != proj.out_features:
        raise ConfigError("an identity head needs a square linear projection (dim = trunk width)")
    with torch.no_grad():
        proj.weight.copy_(torch.eye(proj.in_features))
        if proj.bias is not None:
            proj.bias.zero_()


class SplitTower(nn.Module):
    """``bottom(pixels)`` -> cached maps; ``forward(maps)`` -> embeddings (not normalised)."""

    def __init__(self, visual: Any, unfreeze: int) -> None:
        super().__init__()
        self.visual = visual
        trunk = visual.trunk
        self.staged = all(hasattr(trunk, a) for a in STAGED)
        if unfreeze > 0 and not self.staged:
            raise ConfigError(
                f"training backbone stages needs an EfficientNet-style timm trunk; "
                f"{type(trunk).__name__} is not one (use --strategy head)"
            )
        n = len(trunk.blocks) if self.staged else 0
        self.cut = n - min(max(unfreeze, 0), n) if self.staged else 0
        self.unfreeze = n - self.cut if unfreeze > 0 else 0

    def bottom(self, pixels: torch.Tensor) -> torch.Tensor:
        t = self.visual.trunk
        if self.unfreeze == 0:
            return t(pixels)  # pooled features
        x = t.bn1(t.conv_stem(pixels))
        for block in t.blocks[: self.cut]:
            x = block(x)
        return x

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        t = self.visual.trunk
        if self.unfreeze == 0:
            return self.visual.head(maps)
        x = maps
        for block in t.blocks[self.cut :]:
            x = block(x)
        x = t.global_pool(t.bn2(t.conv_head(x)))
        return self.visual.head(x.flatten(1))

    def param_groups(self, lr: float, backbone_scale: float, decay: float) -> list[dict[str, Any]]:
        """Freeze the bottom; the head at ``lr``, top stages at layer-wise smaller rates."""
        for p in self.visual.trunk.parameters():
            p.requires_grad = False
        head = list(self.visual.head.parameters())
        for p in head:
            p.requires_grad = True
        groups: list[dict[str, Any]] = [{"params": head, "lr": lr, "name": "head"}]
        if self.unfreeze == 0:
            return groups
        t = self.visual.trunk
        tops = [("conv_head", [t.conv_head, t.bn2])]
        tops += [(f"blocks.{i}", [t.blocks[i]]) for i in reversed(range(self.cut, len(t.blocks)))]
        for depth, (name, modules) in enumerate(tops):
            params = [p for m in modules for p in m.parameters()]
            for p in params:
                p.requires_grad = True
            groups.append(
                {"params": params, "lr": lr * backbone_scale * decay**depth, "name": name}
            )
        log.info(
            "training the head and the last %d stages (%d parameters)",
            self.unfreeze,
            sum(p.numel() for g in groups for p in g["params"]),
        )
        return groups
