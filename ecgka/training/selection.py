"""Validation metrics for model selection: MAE, balanced MAE (mean of per-bin MAEs) and shot-group MAEs.

Bins follow the manifest's label grid: bin index = round((y - lo) / bin_width) (docs/contracts.md).
"""

from __future__ import annotations

import numpy as np


def label_bins(labels: np.ndarray, lo: float, bin_width: float) -> np.ndarray:
    return np.rint((np.asarray(labels, dtype=np.float64) - lo) / bin_width).astype(np.int64)


def selection_metrics(pred: np.ndarray, labels: np.ndarray, label_info: dict, shot_groups: dict | None
                      ) -> dict[str, float]:
    """MAE, balanced MAE and MAE per shot group (groups absent from the split are left out)."""
    err = np.abs(np.asarray(pred, dtype=np.float64) - labels)
    bins = label_bins(labels, float(label_info.get("lo", 0.0)), float(label_info.get("bin_width", 0.1)))
    uniq, inverse = np.unique(bins, return_inverse=True)
    per_bin = np.bincount(inverse, weights=err) / np.bincount(inverse)
    out = {"mae": float(err.mean()), "balanced_mae": float(per_bin.mean())}
    for group, members in (shot_groups or {}).items():
        mask = np.isin(bins, np.asarray(members, dtype=np.int64))
        if mask.any():
            out[f"mae_{group}"] = float(err[mask].mean())
    return out
