"""One training step, the same for every method: the criterion decides what it needs.

The model is wrapped in ``FeatureModel`` (features -> optional criterion calibration -> head) so that DDP
sees a single ``forward`` call; the step never asks which method runs.

Precision: under bf16 autocast only the backbone (``forward_features``) runs in bf16; its features are cast
to float32 and the criterion's feature transform, the head and the loss run in float32, so predictions are
never rounded to bf16's 8-bit mantissa (``head_forward`` is the one place that does this).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ecgka.training.views import gaussian_views


def autocast(amp_device: str | None):
    """bf16 autocast on ``amp_device`` ("cuda", or "cpu" in tests); None: no autocast."""
    if amp_device is None:
        return contextlib.nullcontext()
    return torch.autocast(amp_device, dtype=torch.bfloat16)


def fp32_features(features_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                  amp_device: str | None) -> torch.Tensor:
    """``features_fn(x)`` (under bf16 autocast when ``amp_device``), as float32."""
    with autocast(amp_device):
        features = features_fn(x)
    return features.float()


def fp32_head(head: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """The head on float32 features, outside any autocast region: predictions [B] in float32."""
    device_type = features.device.type
    with torch.autocast(device_type, enabled=False):
        return head(features.float()).squeeze(-1)


def head_forward(model: nn.Module, x: torch.Tensor, amp_device: str | None = None) -> torch.Tensor:
    """``model(x)`` with the backbone under autocast and the head in float32 (prediction, validation)."""
    return fp32_head(model.head, fp32_features(model.forward_features, x, amp_device))


class FeatureModel(nn.Module):
    """``forward(x, target, epoch) -> (pred [B], features [B, F])``, both float32, with the criterion's
    feature transform (FDS calibration) between ``forward_features`` and ``head``.

    ``compile_backend`` compiles ``forward_features`` only (the heavy part, a function of ``x`` alone): the
    transform branches on the Python-int epoch and stays eager with the head, so epochs never recompile.
    """

    def __init__(self, model: nn.Module, transform: Callable | None = None, *, amp_device: str | None = None,
                 compile_backend: Any = None):
        super().__init__()
        self.model = model
        self._transform = transform
        self.amp_device = amp_device
        features = model.forward_features
        self._features = features if compile_backend is None else torch.compile(features, backend=compile_backend)

    def forward(self, x: torch.Tensor, target: torch.Tensor | None = None, epoch: int = 0):
        features = fp32_features(self._features, x, self.amp_device)
        used = features
        if self._transform is not None and self.training and target is not None:
            used = self._transform(features, target, epoch)
        return fp32_head(self.model.head, used), features


def train_step(net: nn.Module, criterion: nn.Module, optimizer: torch.optim.Optimizer,
               x: torch.Tensor, y: torch.Tensor, *, epoch: int, views_std: float = 0.1, views: str = "noise",
               after_backward: Callable[[], None] | None = None) -> dict[str, Any]:
    """Forward, loss, backward, optimiser step. Returns ``{"loss", "pred", "terms", "features"}``
    (detached; ``features`` of the first view, for the criterion's epoch statistics). Precision is the
    network's (``FeatureModel.amp_device``); the loss always runs in float32. ``views="released"``: ``x``
    already holds the loader's stacked views (``ecgka.training.views``), ``y`` the labels of one view."""
    rows = y.shape[0]
    if views == "released" and x.shape[0] != rows:
        y = y.repeat(x.shape[0] // rows)
    elif getattr(criterion, "requires_views", False):
        x, y = gaussian_views(x, y, views_std)
    pred, features = net(x, y, epoch)
    feats = features if getattr(criterion, "requires_features", False) else None
    out = criterion(pred, y, features=feats, epoch=epoch)
    optimizer.zero_grad(set_to_none=True)
    out["loss"].backward()
    if after_backward is not None:
        after_backward()
    optimizer.step()
    return {"loss": out["loss"].detach(), "pred": pred.detach()[:rows], "terms": out["terms"],
            "features": features.detach()[:rows]}
