"""Validation metrics for model selection: MAE, balanced MAE (mean of per-bin MAEs) and shot-group MAEs.

Bins and shot groups come from the dataset's ``LabelGrid`` (the manifest's grid and shot rule), the same
as ``ecgka evaluate`` uses, so a checkpoint is selected on the groups it is evaluated on. The numbers are
those of :mod:`ecgka.metrics` (``mae``, ``balanced_mae`` over the grid's bins).
"""

from __future__ import annotations

import numpy as np

from ecgka.labels import GROUPS, LabelGrid
from ecgka.metrics.regression import balanced_mae, mae


def selection_metrics(preds: np.ndarray, labels: np.ndarray, grid: LabelGrid, train_counts) -> dict[str, float]:
    """MAE, balanced MAE and MAE per shot group (groups absent from the split are left out).

    Non-finite predictions give non-finite metrics, which are never selected as best.
    """
    preds = np.asarray(preds, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    out = {"mae": mae(preds, labels), "balanced_mae": balanced_mae(preds, labels, grid.bin_index(labels))}
    groups = grid.assign_groups(labels, np.asarray(train_counts))
    for group in GROUPS:
        mask = groups == group
        if mask.any():
            out[f"mae_{group}"] = mae(preds[mask], labels[mask])
    return out
