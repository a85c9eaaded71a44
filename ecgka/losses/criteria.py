"""Criteria for the plain methods (vanilla, LDS), the Dist Loss method, and "method + Dist Loss".

Each criterion returns elementwise terms; ``Criterion.forward`` reduces and sums them.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ecgka.labels import LabelGrid
from ecgka.losses.base import Criterion, apply_weights, elementwise
from ecgka.losses.distloss import DistLoss
from ecgka.losses.methods import WITH_DIST_LOSS


class Vanilla(Criterion):
    """The plain sample loss ``l(pred, target)`` (l2 = MSE by default)."""

    display_name = "Vanilla"

    def __init__(self, base: str):
        super().__init__()
        self.base = base
        self.loss_fn = elementwise(base)

    def compute(self, pred, target, features, epoch) -> dict[str, Tensor]:
        return {"sample": self.loss_fn(pred, target)}


class WeightedByBin(Criterion):
    """``w(bin(target)) * l(pred, target)`` with a fixed per-bin weight table (LDS)."""

    display_name = "LDS"

    def __init__(self, table: np.ndarray, grid: LabelGrid, base: str):
        super().__init__()
        self.grid, self.base = grid, base
        self.loss_fn = elementwise(base)
        self.register_buffer("weight_table", torch.as_tensor(table, dtype=torch.float32))

    def compute(self, pred, target, features, epoch) -> dict[str, Tensor]:
        weights = self.weight_table[self.grid.clipped_index_torch(target)].to(pred.dtype)
        return {"sample": apply_weights(self.loss_fn(pred, target), weights)}


class DistLossMethod(Criterion):
    """The Dist Loss method: its sample term plus its distribution term (INV-L2, weight 1 by default)."""

    display_name = "Dist Loss"

    def __init__(self, dist: DistLoss):
        super().__init__()
        self.dist = dist

    def compute(self, pred, target, features, epoch) -> dict[str, Tensor]:
        return {"sample": self.dist.sample(pred, target), "distribution": self.dist.distribution(pred, target)}

    def set_gather(self, gather) -> None:
        self.dist.gather = gather


class WithDistLoss(Criterion):
    """Any method plus the Dist Loss distribution term ("LDS + Dist Loss", the paper's Table 2)."""

    def __init__(self, method: Criterion, dist: DistLoss):
        super().__init__()
        self.method, self.dist = method, dist
        self.requires_features = method.requires_features
        self.requires_views = method.requires_views
        self.display_name = method.display_name + WITH_DIST_LOSS

    def compute(self, pred, target, features, epoch) -> dict[str, Tensor]:
        terms = dict(self.method.compute(pred, target, features, epoch))
        terms["distribution"] = self.dist.distribution(pred, target)
        return terms

    def transform_features(self, features, target, epoch):
        return self.method.transform_features(features, target, epoch)

    def on_epoch_start(self, epoch):
        self.method.on_epoch_start(epoch)

    def on_epoch_end(self, epoch, features, targets):
        self.method.on_epoch_end(epoch, features, targets)

    def param_groups(self):
        return self.method.param_groups()

    def set_gather(self, gather) -> None:
        self.dist.gather = gather
