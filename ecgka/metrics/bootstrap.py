"""Cluster bootstrap over subjects: confidence intervals that respect repeated ECGs of one patient.

A replicate draws subjects with replacement and takes *all* samples of each drawn subject (as many times
as the subject was drawn), so within-subject correlation widens the interval as it should. Resampling
single ECGs would treat a patient's ten ECGs as ten independent patients and understate the uncertainty.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np


def _subject_blocks(groups) -> list[np.ndarray]:
    groups = np.asarray(groups).reshape(-1)
    order = np.argsort(groups, kind="stable")
    _, starts = np.unique(groups[order], return_index=True)
    return np.split(order, starts[1:]) if order.size else []


def cluster_bootstrap_indices(groups, n_boot: int, seed: int = 0) -> Iterator[np.ndarray]:
    """Yield ``n_boot`` sample-index arrays, each the samples of subjects drawn with replacement."""
    blocks = _subject_blocks(groups)
    rng = np.random.default_rng(seed)
    for _ in range(n_boot):
        drawn = rng.integers(0, len(blocks), size=len(blocks))
        yield np.concatenate([blocks[i] for i in drawn]) if blocks else np.empty(0, dtype=np.int64)


MIN_N_BOOT = 200  # fewer replicates give percentile limits that move with the seed (``ecgka evaluate`` refuses)


def bootstrap_ci(statistic: Callable[[np.ndarray], float | None], groups, n_boot: int = 1000,
                 seed: int = 0, level: float = 0.95, estimate: float | None = None) -> dict:
    """Percentile CI of ``statistic(indices)`` over subject-level bootstrap replicates.

    Replicates where the statistic is undefined (``None`` or NaN, e.g. no positive case drawn) are dropped
    and counted; the CI is null when fewer than half of the replicates are valid. A CI always contains its
    ``estimate`` (the statistic on the whole sample): the percentile interval is widened to it when the
    replicates all fall on one side (a skewed statistic, or few replicates); ``widened`` says so.
    """
    values = []
    for idx in cluster_bootstrap_indices(groups, n_boot, seed):
        value = statistic(idx)
        if value is not None and np.isfinite(value):
            values.append(value)
    alpha = (1.0 - level) / 2.0
    ok = len(values) >= max(1, n_boot // 2)
    lo, hi = (np.quantile(values, [alpha, 1.0 - alpha]) if ok else (None, None))
    widened = False
    if lo is not None and estimate is not None and np.isfinite(estimate) and not lo <= estimate <= hi:
        lo, hi, widened = min(lo, estimate), max(hi, estimate), True
    return {
        "lower": None if lo is None else float(lo),
        "upper": None if hi is None else float(hi),
        "level": level,
        "n_boot": n_boot,
        "n_valid": len(values),
        "seed": seed,
        "unit": "subject",
        "widened": widened,
    }
