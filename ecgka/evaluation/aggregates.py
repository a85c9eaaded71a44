"""Aggregates behind the report's figures, stored in metrics.json so figures and tables share one source.

Nothing here keeps an individual's row: predictions enter only as counts on a 0.1 mmol/L grid (2-D
histograms), as ROC curve points, or as quantiles of the sorted few-shot errors.
"""

from __future__ import annotations

import numpy as np

from ecgka.metrics.shots import bin_index


def _grid_counts(values, lo: float, width: float, n_bins: int) -> tuple[list[int], int]:
    idx = bin_index(values, lo, width)
    outside = int(np.sum((idx < 0) | (idx >= n_bins)))
    return np.bincount(np.clip(idx, 0, n_bins - 1), minlength=n_bins).tolist(), outside


def distributions(labels, preds, lo: float, hi: float, width: float) -> dict:
    """Label and prediction histograms on the label grid (predictions outside it go to the end bins)."""
    n_bins = int(round((hi - lo) / width)) + 1
    label_counts, _ = _grid_counts(labels, lo, width, n_bins)
    pred_counts, clipped = _grid_counts(preds, lo, width, n_bins)
    return {"lo": lo, "bin_width": width, "labels": label_counts, "predictions": pred_counts,
            "predictions_clipped": clipped}


def sorted_error_curve(abs_errors, n_points: int = 101) -> dict:
    """The sorted absolute errors (paper Figure 5) as quantiles at evenly spaced rank fractions."""
    abs_errors = np.sort(np.asarray(abs_errors, dtype=np.float64))
    fractions = np.linspace(0.0, 1.0, n_points)
    values = np.quantile(abs_errors, fractions).tolist() if abs_errors.size else []
    return {"n": int(abs_errors.size), "rank_fraction": fractions.tolist() if values else [],
            "abs_error": values}


def density_2d(x, y, x_range: tuple[float, float], y_range: tuple[float, float], width: float) -> dict:
    """Counts on a (x, y) grid of cells ``width`` wide (values outside the range go to the edge cells).

    Stored sparsely: ``cells`` lists ``[x_index, y_index, count]`` of the non-empty cells.
    """
    nx = int(round((x_range[1] - x_range[0]) / width))
    ny = int(round((y_range[1] - y_range[0]) / width))
    ix = np.clip(np.floor((np.asarray(x, dtype=np.float64) - x_range[0]) / width + 1e-9), 0, nx - 1)
    iy = np.clip(np.floor((np.asarray(y, dtype=np.float64) - y_range[0]) / width + 1e-9), 0, ny - 1)
    counts = np.zeros((ny, nx), dtype=np.int64)
    np.add.at(counts, (iy.astype(np.int64), ix.astype(np.int64)), 1)
    iy_nz, ix_nz = np.nonzero(counts)
    cells = np.stack([ix_nz, iy_nz, counts[iy_nz, ix_nz]], axis=1).tolist()
    return {"x_range": list(x_range), "y_range": list(y_range), "cell": width, "shape": [ny, nx],
            "cells": cells}


def dense_counts(density: dict) -> np.ndarray:
    """The [y, x] count matrix of a ``density_2d`` result."""
    counts = np.zeros(density["shape"], dtype=np.int64)
    for ix, iy, c in density["cells"]:
        counts[iy, ix] = c
    return counts


def roc_points(truth, score, max_points: int = 200) -> dict | None:
    """ROC curve points (sklearn ``roc_curve``), thinned to at most ``max_points``; null if one class."""
    from sklearn.metrics import roc_curve

    truth = np.asarray(truth, dtype=bool)
    if truth.all() or not truth.any():
        return None
    fpr, tpr, _ = roc_curve(truth, score)
    if fpr.size > max_points:
        keep = np.unique(np.linspace(0, fpr.size - 1, max_points).round().astype(int))
        fpr, tpr = fpr[keep], tpr[keep]
    return {"fpr": fpr.tolist(), "tpr": tpr.tolist()}
