"""ConR's two views (``views`` of a training config).

- ``noise`` (ECG, as the paper; the default): two Gaussian-noise copies of each (z-scored or normalised)
  input, 2B rows, the sample loss on both (:func:`gaussian_views`).
- ``released`` (images, the released ConR code): the sample loss on the usual augmented view and ConR on
  two further random crop + flip views of the same images, 3B rows ``[view 0; view 1; view 2]``. The loader
  draws the three augmentations (:func:`augmented_views`); the criterion is told the layout once
  (:func:`use_released_views`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

RELEASED_VIEWS = 3  # the supervised view, then ConR's two views


def gaussian_views(x: torch.Tensor, target: torch.Tensor, std: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ([x + n1; x + n2], [target; target]) with n ~ N(0, std^2) drawn from torch's global RNG
    (so that views are reproducible and restored on resume like dropout)."""
    noise = torch.randn((2, *x.shape), device=x.device, dtype=x.dtype) * std
    return (x.unsqueeze(0) + noise).flatten(0, 1), target.repeat(2)


def view_generator(seed: int, epoch: int, batch: int, view: int) -> torch.Generator:
    """The augmentation generator of view ``view`` (>= 1) of one training batch: a pure function of
    (seed, epoch, batch, view), independent of view 0's (``loader.augmentation_generator``)."""
    state = np.random.SeedSequence([seed, epoch, batch, view]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def augmented_views(source: Any, indices: np.ndarray, first: torch.Generator, draws: tuple[int, int, int],
                    views: int = RELEASED_VIEWS) -> tuple[torch.Tensor, torch.Tensor]:
    """``views`` independently augmented copies of the same images, stacked: ([x0; x1; x2], y [B]).
    View 0 is exactly the batch drawn without views (generator ``first``), so the supervised view is the
    ordinary training batch."""
    x0, y = source.batch(indices, True, first)
    rest = [source.batch(indices, True, view_generator(*draws, v))[0] for v in range(1, views)]
    return torch.cat([x0, *rest]), y


def use_released_views(criterion: torch.nn.Module) -> bool:
    """Tell every part of ``criterion`` that takes views (ConR, also inside a Dist Loss composition) that its
    rows are the released layout; False when none does (the trainer then loads one view)."""
    found = False
    for module in criterion.modules():
        if getattr(module, "requires_views", False) and hasattr(module, "released_views"):
            module.released_views = True
            found = True
    return found


def training_views(cfg: Any, criterion: torch.nn.Module, train: Any) -> int:
    """How many augmented views the loader stacks per training batch: 3 for ``views: released`` with a
    criterion that takes views, else 1. Released views are random crops and flips, which only image kinds
    draw: an ECG split (no augmentation) would give three identical copies, so it is refused."""
    if cfg.views != "released":
        return 1
    if getattr(train, "device_zscore", False):
        from ecgka.errors import ConfigError

        raise ConfigError("views: released draws random crop + flip views of images; ECG has no such "
                          "augmentation (the paper built ECG views with Gaussian noise): use views=noise")
    return RELEASED_VIEWS if use_released_views(criterion) else 1
