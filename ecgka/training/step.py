"""One training step, the same for every method: the criterion decides what it needs.

The model is wrapped in ``FeatureModel`` (features -> optional criterion calibration -> head) so that DDP
sees a single ``forward`` call; the step never asks which method runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ecgka.training.views import gaussian_views


class FeatureModel(nn.Module):
    """``forward(x, target, epoch) -> (pred [B], features [B, F])`` with the criterion's feature
    transform (FDS calibration) between ``forward_features`` and ``head``."""

    def __init__(self, model: nn.Module, transform: Callable | None = None):
        super().__init__()
        self.model = model
        self._transform = transform

    def forward(self, x: torch.Tensor, target: torch.Tensor | None = None, epoch: int = 0):
        features = self.model.forward_features(x)
        used = features
        if self._transform is not None and self.training and target is not None:
            used = self._transform(features, target, epoch)
        return self.model.head(used).squeeze(-1), features


def autocast(bf16: bool):
    """bf16 autocast on CUDA (``Runtime.bf16`` is only ever true there), else nothing."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def train_step(net: nn.Module, criterion: nn.Module, optimizer: torch.optim.Optimizer,
               x: torch.Tensor, y: torch.Tensor, *, epoch: int, views_std: float = 0.1, bf16: bool = False,
               after_backward: Callable[[], None] | None = None) -> dict[str, Any]:
    """Forward, loss, backward, optimiser step. Returns ``{"loss", "pred", "terms", "features"}``
    (detached; ``features`` of the first view, for the criterion's epoch statistics)."""
    rows = x.shape[0]
    if getattr(criterion, "requires_views", False):
        x, y = gaussian_views(x, y, views_std)
    with autocast(bf16):
        pred, features = net(x, y, epoch)
    pred = pred.float()
    feats = features.float() if getattr(criterion, "requires_features", False) else None
    out = criterion(pred, y, features=feats, epoch=epoch)
    optimizer.zero_grad(set_to_none=True)
    out["loss"].backward()
    if after_backward is not None:
        after_backward()
    optimizer.step()
    return {"loss": out["loss"].detach(), "pred": pred.detach()[:rows], "terms": out["terms"],
            "features": features.detach()[:rows].float()}
