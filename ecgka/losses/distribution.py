"""Dist Loss pseudo-labels: the label pmf (KDE on a grid), per-batch counts, and the sorted pseudo-labels.

Roundings (``batch_counts``):
- ``official``: the released rule (tail lumping, round-half-even, residual on a window at the mode);
  where the released rule loses the residual at a grid edge or makes a count negative, the counts are
  repaired (residual moved inside the grid, never below 0) and a ``RoundingRepairWarning`` says so.
- ``released``: the released rule literally, defects included (counts may not sum to B or be -1).
- ``paper``: Eq. 1 of the paper (floor, then +1 to the first ceil(a/2) and last floor(a/2) bins).
- ``quantile``: the B midpoint quantiles (j + 0.5) / B of the pmf: exact B, no rounding artefacts.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.stats import gaussian_kde

from ecgka.errors import ConfigError, InputError
from ecgka.labels import as_grid
from ecgka.losses.options import DistLossOptions
from ecgka.names import NameTable

_DEFAULTS = DistLossOptions()

ROUNDINGS: NameTable = NameTable("rounding")


class RoundingRepairWarning(UserWarning):
    """The released rounding rule was defective for this pmf and batch size; the counts were repaired."""


def label_pmf(labels, label_range, bw_method: float = _DEFAULTS.bw_method):
    """Gaussian KDE (scipy semantics) of the labels in range, evaluated on the grid's centres and summed
    to 1; ``label_range`` is a ``LabelGrid`` or ``(lo, hi, step)``. Returns (centres, pmf)."""
    grid = as_grid(label_range)
    labels = np.asarray(labels, dtype=np.float64).ravel()
    labels = labels[(labels >= grid.lo) & (labels <= grid.hi)]
    if labels.size < 2 or np.ptp(labels) == 0:
        raise InputError(f"label_pmf needs at least two distinct labels in [{grid.lo}, {grid.hi}]")
    centres = grid.centres
    density = gaussian_kde(labels, bw_method=bw_method)(centres)
    return centres, density / density.sum()


def _released_steps(n: np.ndarray) -> tuple[np.ndarray, int]:
    """Steps 1-2 of the released rule: tail lumping at fi/bi, round-half-even inside; returns counts, m."""
    length = len(n)
    forward, backward = np.cumsum(n), np.cumsum(n[::-1])[::-1]
    first = int(np.argmax(forward >= 1))
    last = length - 1 - int(np.argmax(backward[::-1] >= 1))
    counts = np.zeros(length, dtype=np.int64)
    counts[first + 1 : last] = np.rint(n[first + 1 : last]).astype(np.int64)
    counts[first] = int(np.rint(forward[first]))
    counts[last] = int(np.rint(backward[last]))
    return counts, int(np.argmax(counts))


def _released(pmf: np.ndarray, batch_size: int) -> np.ndarray:
    counts, mode = _released_steps(np.asarray(pmf, dtype=np.float64) * batch_size)
    residual = batch_size - int(counts.sum())
    if abs(residual) <= len(counts) // 2:
        start = mode - abs(residual) // 2
        for k in range(start, start + abs(residual)):
            if 0 <= k < len(counts):  # bins past an edge are skipped: that part of the residual is lost
                counts[k] += np.sign(residual)
    return counts


@ROUNDINGS.register("released")
def released_counts(pmf: np.ndarray, batch_size: int) -> np.ndarray:
    """The released rule literally, defects included."""
    return _released(pmf, batch_size)


def _repair(counts: np.ndarray, mode: int, batch_size: int) -> np.ndarray:
    """Spread the residual over bins nearest the mode, inside the grid and never below zero."""
    counts = counts.copy()
    order = np.argsort(np.abs(np.arange(len(counts)) - mode), kind="stable")
    residual = batch_size - int(counts.sum())
    while residual != 0:
        step = int(np.sign(residual))
        usable = order if step > 0 else order[counts[order] > 0]
        chosen = usable[: abs(residual)]
        counts[chosen] += step
        residual -= step * len(chosen)
    return counts


@ROUNDINGS.register("official")
def official_counts(pmf: np.ndarray, batch_size: int) -> np.ndarray:
    """The released rule; when it loses the residual or goes negative, repaired (with a warning)."""
    counts = _released(pmf, batch_size)
    if counts.sum() == batch_size and counts.min() >= 0:
        return counts
    base, mode = _released_steps(np.asarray(pmf, dtype=np.float64) * batch_size)
    warnings.warn(
        f"official rounding at batch size {batch_size}: the released rule gives counts summing to "
        f"{int(counts.sum())} (min {int(counts.min())}); residual re-spread around the mode",
        RoundingRepairWarning,
        stacklevel=3,
    )
    return _repair(base, mode, batch_size)


@ROUNDINGS.register("paper")
def paper_counts(pmf: np.ndarray, batch_size: int) -> np.ndarray:
    """Eq. 1: floor each n_i, then +1 to bins i <= floor((a+1)/2) and i > L - floor(a/2) (1-based)."""
    n = np.asarray(pmf, dtype=np.float64) * batch_size
    counts = np.floor(n).astype(np.int64)
    a = batch_size - int(counts.sum())
    i = np.arange(1, len(n) + 1)
    counts += ((i <= (a + 1) // 2) | (i > len(n) - a // 2)).astype(np.int64)
    return counts


@ROUNDINGS.register("quantile")
def quantile_counts(pmf: np.ndarray, batch_size: int) -> np.ndarray:
    """Counts of the B midpoint quantiles (j + 0.5) / B of the pmf (optimal 1-Wasserstein quantisation)."""
    pmf = np.asarray(pmf, dtype=np.float64)
    cdf = np.cumsum(pmf) / pmf.sum()
    levels = (np.arange(batch_size) + 0.5) / batch_size
    index = np.minimum(np.searchsorted(cdf, levels, side="left"), len(pmf) - 1)
    return np.bincount(index, minlength=len(pmf)).astype(np.int64)


def batch_counts(pmf, batch_size: int, rounding: str = _DEFAULTS.rounding) -> np.ndarray:
    """Integer count per grid point for a batch of ``batch_size`` (sums to B and >= 0 except "released")."""
    if int(batch_size) < 1:
        raise ConfigError(f"batch size must be >= 1, got {batch_size}")
    pmf = np.asarray(pmf, dtype=np.float64)
    if pmf.ndim != 1 or pmf.size == 0 or (pmf < 0).any() or not np.isfinite(pmf).all() or pmf.sum() <= 0:
        raise InputError("pmf must be a non-empty 1-d array of finite non-negative values with a positive sum")
    if abs(pmf.sum() - 1.0) > 1e-9:  # a pmf that sums to 1 is used bit for bit, as the released code does
        pmf = pmf / pmf.sum()
    return ROUNDINGS.get(rounding)(pmf, int(batch_size))


def pseudo_labels(grid, pmf, batch_size: int, rounding: str = _DEFAULTS.rounding) -> np.ndarray:
    """Ascending pseudo-labels: grid value i repeated counts[i] times (length B).

    With ``rounding="released"`` a lost residual leaves trailing 0.0 values (as in the released code)
    and negative counts contribute nothing.
    """
    grid = np.asarray(grid, dtype=np.float64)
    counts = batch_counts(pmf, batch_size, rounding)
    if len(counts) != len(grid):
        raise InputError(f"grid has {len(grid)} points but pmf has {len(counts)}")
    values = np.repeat(grid, np.maximum(counts, 0))[:batch_size]
    return np.concatenate([values, np.zeros(batch_size - len(values))])
