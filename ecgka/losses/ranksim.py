"""RankSim (Gong et al. 2022): the ranking of feature similarities should follow that of label similarities.

Per batch: one random sample per distinct target; cosine similarities of the features; label similarity
``-|y_i - y_j|``; descending ranks normalised as (rank + 1) / n; loss = sum over rows of the MSE between
the two rank rows. The rank's gradient is the blackbox combinatorial-solver rule (Vlastelica et al.):
``-(rank(s) - rank(s + lambda * grad)) / lambda``, so lambda changes only the gradient.

Ties: ranks are computed with a stable descending sort, so equal values rank in index order
(deterministic; the released argsort left ties arbitrary).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ecgka.losses.base import Criterion, elementwise
from ecgka.losses.methods import METHODS


def rank_normalised(seq: Tensor) -> Tensor:
    """Descending rank along the last dim, (rank + 1) / n; ties rank in index order."""
    order = torch.argsort(seq, dim=-1, descending=True, stable=True)
    positions = torch.arange(seq.shape[-1], device=seq.device).expand_as(order)
    rank = torch.empty_like(order).scatter_(-1, order, positions)
    return (rank + 1).to(seq.dtype) / seq.shape[-1]


class TrueRanker(torch.autograd.Function):
    """Rank in the forward pass, blackbox-solver gradient in the backward pass."""

    @staticmethod
    def forward(ctx, seq: Tensor, lambda_val: float) -> Tensor:
        rank = rank_normalised(seq)
        ctx.save_for_backward(seq, rank)
        ctx.lambda_val = lambda_val
        return rank

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        seq, rank = ctx.saved_tensors
        rank_prime = rank_normalised(seq + ctx.lambda_val * grad_output)
        return -(rank - rank_prime) / (ctx.lambda_val + 1e-8), None


def one_per_target(targets: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Indices of one uniformly random sample per distinct target value."""
    perm = torch.randperm(targets.shape[0], generator=generator, device="cpu").to(targets.device)
    _, group = torch.unique(targets[perm], return_inverse=True)
    n_groups = int(group.max()) + 1
    first = torch.full((n_groups,), targets.shape[0], device=targets.device, dtype=torch.long)
    first = first.scatter_reduce(0, group, torch.arange(len(perm), device=targets.device), reduce="amin")
    return perm[first]


def ranksim_regularizer(features: Tensor, targets: Tensor, lambda_val: float = 2.0,
                        generator: torch.Generator | None = None) -> Tensor:
    """Batchwise ranking-similarity regulariser (sum over anchors of the rank-row MSE)."""
    targets = targets.reshape(-1)
    if torch.unique(targets).numel() < targets.numel():
        keep = one_per_target(targets, generator)
        features, targets = features[keep], targets[keep]
    x = F.normalize(features.reshape(features.shape[0], -1), dim=1)
    feature_ranks = TrueRanker.apply(x @ x.t(), lambda_val)
    label_ranks = rank_normalised(-(targets[:, None] - targets[None, :]).abs()).to(feature_ranks.dtype)
    return ((feature_ranks - label_ranks) ** 2).mean(dim=1).sum()


class RankSimMethod(Criterion):
    """Sample loss + gamma * RankSim on the pooled features (gamma 100, lambda 2 as released)."""

    requires_features = True
    display_name = METHODS.get("ranksim").display_name

    def __init__(self, base: str, gamma: float, lambda_val: float):
        super().__init__()
        self.loss_fn, self.gamma, self.lambda_val = elementwise(base), float(gamma), float(lambda_val)

    def compute(self, pred, target, features, epoch) -> dict[str, Tensor]:
        reg = ranksim_regularizer(features, target, self.lambda_val)
        return {"sample": self.loss_fn(pred, target), "ranksim": self.gamma * reg}
