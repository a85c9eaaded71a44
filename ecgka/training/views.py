"""Gaussian-noise views (ConR on ECG): two noisy copies of each z-scored signal, 2B rows."""

from __future__ import annotations

import torch


def gaussian_views(x: torch.Tensor, target: torch.Tensor, std: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ([x + n1; x + n2], [target; target]) with n ~ N(0, std^2) drawn from torch's global RNG
    (so that views are reproducible and restored on resume like dropout)."""
    noise = torch.randn((2, *x.shape), device=x.device, dtype=x.dtype) * std
    return (x.unsqueeze(0) + noise).flatten(0, 1), target.repeat(2)
