"""Sorting the batch predictions for the Dist Loss distribution term (ascending, one sequence).

- ``soft``: torchsort's soft sort (Blondel et al. 2020), l2 regularisation, on the tensor's own device.
- ``hard``: ``torch.sort`` (gradient = the permutation).
- ``auto``: ``torch.sort`` when every gap between adjacent sorted values is <= 1/eps, where the l2 soft
  sort equals the hard sort exactly (values and Jacobian); torchsort otherwise. One cheap pass decides.
- ``released``: the released design, a numpy soft sort with a CPU round trip per call. Reference only
  (benchmark and an equality test); never faster.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ecgka.errors import ConfigError
from ecgka.names import NameTable

SORTERS: NameTable = NameTable("sorter")


def _torchsort():
    """Import torchsort lazily (it is a compiled extension) with an actionable message."""
    try:
        import torchsort
    except ImportError:
        raise ConfigError(
            "sorter 'soft' needs the torchsort package (build it with `make torchsort`); "
            "or use sorter 'hard' or 'auto'"
        ) from None
    return torchsort


@SORTERS.register("soft")
def soft_sort(x: Tensor, regularization_strength: float) -> Tensor:
    """torchsort l2 soft sort of a 1-d tensor, ascending, on ``x.device``."""
    sorted_x = _torchsort().soft_sort(
        x.unsqueeze(0), regularization="l2", regularization_strength=regularization_strength
    )
    return sorted_x[0]


@SORTERS.register("hard")
def hard_sort(x: Tensor, regularization_strength: float) -> Tensor:
    """``torch.sort`` ascending (``regularization_strength`` ignored)."""
    return torch.sort(x).values


def soft_equals_hard(sorted_x: Tensor, regularization_strength: float) -> bool:
    """True when all adjacent gaps of ascending ``sorted_x`` are <= 1/eps (soft sort is exact there)."""
    if sorted_x.numel() < 2:
        return True
    return bool((sorted_x[1:] - sorted_x[:-1]).max() <= 1.0 / regularization_strength)


@SORTERS.register("auto")
def auto_sort(x: Tensor, regularization_strength: float) -> Tensor:
    """The hard sort where it equals the l2 soft sort, the soft sort otherwise."""
    hard = torch.sort(x).values
    if soft_equals_hard(hard.detach(), regularization_strength):
        return hard
    return soft_sort(x, regularization_strength)


def _pav_nonincreasing(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """l2 isotonic regression with a non-increasing solution; returns the fit and each point's block."""
    sums, sizes = [], []
    for value in y:
        sums.append(float(value))
        sizes.append(1)
        while len(sums) > 1 and sums[-2] / sizes[-2] < sums[-1] / sizes[-1]:
            s, c = sums.pop(), sizes.pop()
            sums[-1] += s
            sizes[-1] += c
    block = np.repeat(np.arange(len(sizes)), sizes)
    return np.repeat(np.array(sums) / np.array(sizes), sizes), block


def _block_mean(g: np.ndarray, block: np.ndarray) -> np.ndarray:
    means = np.bincount(block, weights=g) / np.bincount(block)
    return means[block]


def released_soft_sort_numpy(theta: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ascending l2 soft sort in numpy: -(rho/eps - PAV(rho/eps - sort_desc(-theta))).

    Returns (values, permutation of the ascending sort, PAV blocks) for the backward pass.
    """
    n = len(theta)
    rho = np.arange(n, 0, -1, dtype=np.float64) / eps
    perm = np.argsort(theta, kind="stable")
    w = -theta[perm]
    fit, block = _pav_nonincreasing(rho - w)
    return -(rho - fit), perm, block


class _ReleasedSoftSort(torch.autograd.Function):
    """The released design: to the CPU and numpy for the sort, back to the device, every call."""

    @staticmethod
    def forward(ctx, x: Tensor, eps: float) -> Tensor:
        values, perm, block = released_soft_sort_numpy(x.detach().cpu().numpy().astype(np.float64), eps)
        ctx.save_for_backward(torch.from_numpy(perm), torch.from_numpy(block))
        return torch.from_numpy(values).to(device=x.device, dtype=x.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        perm, block = ctx.saved_tensors
        g = _block_mean(grad.detach().cpu().numpy().astype(np.float64), block.numpy())
        out = np.empty_like(g)
        out[perm.numpy()] = g
        return torch.from_numpy(out).to(device=grad.device, dtype=grad.dtype), None


@SORTERS.register("released")
def released_sort(x: Tensor, regularization_strength: float) -> Tensor:
    """Reference of the released design (CPU numpy soft sort per call); for benchmarks and tests."""
    return _ReleasedSoftSort.apply(x, regularization_strength)


def sort_predictions(x: Tensor, sorter: str, regularization_strength: float) -> Tensor:
    """Sort a 1-d tensor ascending with the named sorter."""
    if regularization_strength <= 0:
        raise ConfigError(f"regularization_strength must be > 0, got {regularization_strength}")
    return SORTERS.get(sorter)(x, regularization_strength)
