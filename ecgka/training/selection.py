"""Validation metrics for model selection: MAE, balanced MAE (mean of per-bin MAEs) and shot-group MAEs.

Bins and shot groups come from the dataset's ``LabelGrid`` (the manifest's grid and shot rule), the same
as ``ecgka evaluate`` uses, so a checkpoint is selected on the groups it is evaluated on.
"""

from __future__ import annotations

import numpy as np

from ecgka.labels import GROUPS, LabelGrid


def selection_metrics(preds: np.ndarray, labels: np.ndarray, grid: LabelGrid, train_counts) -> dict[str, float]:
    """MAE, balanced MAE and MAE per shot group (groups absent from the split are left out).

    Non-finite predictions give non-finite metrics, which are never selected as best.
    """
    err = np.abs(np.asarray(preds, dtype=np.float64) - np.asarray(labels, dtype=np.float64))
    _, inverse = np.unique(grid.bin_index(labels), return_inverse=True)
    per_bin = np.bincount(inverse, weights=err) / np.bincount(inverse)
    out = {"mae": float(err.mean()), "balanced_mae": float(per_bin.mean())}
    groups = grid.assign_groups(labels, np.asarray(train_counts))
    for group in GROUPS:
        mask = groups == group
        if mask.any():
            out[f"mae_{group}"] = float(err[mask].mean())
    return out
