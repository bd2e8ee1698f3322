"""Metric-learning losses over labelled batches of L2-normalised embeddings."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def supcon_loss(z: torch.Tensor, labels: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020), InfoNCE with same-label positives.

    ``z`` is (B, D) and unit-norm. Anchors without a positive in the batch are ignored.
    """
    sim = z @ z.T / temperature
    eye = torch.eye(z.shape[0], dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(eye, float("-inf"))
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    pos = (labels[:, None] == labels[None, :]) & ~eye
    n_pos = pos.sum(1)
    has = n_pos > 0
    if not bool(has.any()):
        return z.sum() * 0.0
    mean_log_prob = log_prob.masked_fill(~pos, 0.0).sum(1)[has] / n_pos[has]
    return -mean_log_prob.mean()


def koleo_loss(z: torch.Tensor, labels: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Kozachenko-Leonenko entropy regulariser (SSCD, Pizzi et al. 2022): spread items apart.

    ``-mean(log(distance to the nearest embedding of another label))`` over the batch:
    pushes each item away from its closest other item, so look-alike products keep
    distinct vectors. Pairs of one label (an item and its views) are left out.
    """
    dist = torch.cdist(z, z)
    same = labels[:, None] == labels[None, :]
    nearest = dist.masked_fill(same, float("inf")).amin(1)
    ok = torch.isfinite(nearest)
    if not bool(ok.any()):
        return z.sum() * 0.0
    return -torch.log(nearest[ok] + eps).mean()


def batch_hard_triplet_loss(
    z: torch.Tensor, labels: torch.Tensor, margin: float = 0.2
) -> torch.Tensor:
    """Triplet loss with batch-hard mining (Hermans et al. 2017) on cosine distance."""
    dist = 1.0 - z @ z.T
    eye = torch.eye(z.shape[0], dtype=torch.bool, device=z.device)
    same = (labels[:, None] == labels[None, :]) & ~eye
    diff = labels[:, None] != labels[None, :]
    valid = same.any(1) & diff.any(1)
    if not bool(valid.any()):
        return z.sum() * 0.0
    hardest_pos = dist.masked_fill(~same, float("-inf")).amax(1)
    hardest_neg = dist.masked_fill(~diff, float("inf")).amin(1)
    return F.relu(hardest_pos - hardest_neg + margin)[valid].mean()


class CosineClassifier(torch.nn.Module):
    """Training-only label classifier on unit-norm embeddings (normalised softmax).

    ``logits = z @ normalize(W).T / temperature``: its cross-entropy pulls each label's
    embeddings towards one learned direction, a global signal that batch-level metric
    losses lack. It is never exported: search only uses the embeddings.
    """

    def __init__(self, dim: int, labels: int, temperature: float) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(labels, dim) * dim**-0.5)
        self.temperature = temperature

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z @ F.normalize(self.weight, dim=-1).T / self.temperature


def metric_loss(
    name: str, z: torch.Tensor, labels: torch.Tensor, *, temperature: float, margin: float
) -> torch.Tensor:
    if name == "triplet":
        return batch_hard_triplet_loss(z, labels, margin)
    return supcon_loss(z, labels, temperature)
