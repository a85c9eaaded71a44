"""Aggregates behind the report's figures, stored in metrics.json so figures and tables share one source.

Nothing here keeps an individual's row: predictions enter only as counts on the label grid (1-D and
2-D histograms, binned by :class:`ecgka.labels.LabelGrid`), as ROC curve points, or as quantiles of the
sorted few-shot errors.
"""

from __future__ import annotations

import numpy as np

from ecgka.catalog.info import LabelHistogram
from ecgka.labels import LabelGrid


def distributions(preds, labels, grid: LabelGrid) -> dict:
    """Label and prediction histograms on the label grid (predictions outside it go to the end bins): a
    :class:`LabelHistogram` of the labels (counts under ``labels``) and the predictions' counts."""
    idx = grid.bin_index(np.asarray(preds, dtype=np.float64))
    clipped = int(np.sum((idx < 0) | (idx >= grid.n_bins)))
    pred_counts = np.bincount(np.clip(idx, 0, grid.n_bins - 1), minlength=grid.n_bins)
    label_counts = np.bincount(grid.clipped_index(labels), minlength=grid.n_bins)
    return {**LabelHistogram.from_counts(grid, label_counts).to_dict(counts="labels"),
            "predictions": pred_counts.tolist(), "predictions_clipped": clipped}


def sorted_error_curve(abs_errors, n_points: int = 101) -> dict:
    """The sorted absolute errors (paper Figure 5) as quantiles at evenly spaced rank fractions."""
    abs_errors = np.sort(np.asarray(abs_errors, dtype=np.float64))
    fractions = np.linspace(0.0, 1.0, n_points)
    values = np.quantile(abs_errors, fractions).tolist() if abs_errors.size else []
    return {"n": int(abs_errors.size), "rank_fraction": fractions.tolist() if values else [],
            "abs_error": values}


def _cells(grid: LabelGrid, values, lo: float, hi: float) -> tuple[np.ndarray, int]:
    """Cell indices of ``values`` on ``[lo, hi)`` in grid steps, clipped to the edge cells.

    Labels and predictions are float32 at the source (shards, model output) even when handed over as
    float64, so cells are taken at float32 precision: a label 4.1 stored as 4.0999999 opens the 4.1 cell.
    """
    n = int(round((hi - lo) / grid.step))
    return np.clip(grid.cell_index(np.asarray(values, dtype=np.float32), grid.step, lo), 0, n - 1), n


def density_2d(x, y, x_range: tuple[float, float], y_range: tuple[float, float], grid: LabelGrid) -> dict:
    """Counts on a (x, y) grid of cells one grid step wide (values outside the range go to the edge cells).

    Stored sparsely: ``cells`` lists ``[x_index, y_index, count]`` of the non-empty cells.
    """
    ix, nx = _cells(grid, x, *x_range)
    iy, ny = _cells(grid, y, *y_range)
    counts = np.zeros((ny, nx), dtype=np.int64)
    np.add.at(counts, (iy, ix), 1)
    iy_nz, ix_nz = np.nonzero(counts)
    cells = np.stack([ix_nz, iy_nz, counts[iy_nz, ix_nz]], axis=1).tolist()
    return {"x_range": list(x_range), "y_range": list(y_range), "cell": grid.step, "shape": [ny, nx],
            "cells": cells}


def dense_counts(density: dict) -> np.ndarray:
    """The [y, x] count matrix of a ``density_2d`` result."""
    counts = np.zeros(density["shape"], dtype=np.int64)
    for ix, iy, c in density["cells"]:
        counts[iy, ix] = c
    return counts


def roc_points(score, truth, max_points: int = 200) -> dict | None:
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
