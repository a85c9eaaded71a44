"""Regression errors as pure functions on arrays: MAE, MSE, GM and their balanced (per-label) variants.

GM is the geometric mean of absolute errors with scipy ``gmean`` semantics and no epsilon: a single
exact zero error makes it 0. Empty inputs give ``None`` (reported as null), never a crash or a NaN.
"""

from __future__ import annotations

import numpy as np


def _errors(preds, labels) -> np.ndarray:
    preds = np.asarray(preds, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels, dtype=np.float64).reshape(-1)
    if preds.shape != labels.shape:
        raise ValueError(f"preds and labels differ in length: {preds.size} vs {labels.size}")
    return preds - labels


def mae(preds, labels) -> float | None:
    """Mean absolute error; ``None`` for no samples."""
    err = _errors(preds, labels)
    return float(np.mean(np.abs(err))) if err.size else None


def mse(preds, labels) -> float | None:
    """Mean squared error; ``None`` for no samples."""
    err = _errors(preds, labels)
    return float(np.mean(err**2)) if err.size else None


def geometric_mean(values) -> float | None:
    """Geometric mean of non-negative values as ``scipy.stats.gmean``: any zero gives exactly 0."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if not values.size:
        return None
    if np.any(values == 0):
        return 0.0
    return float(np.exp(np.mean(np.log(values))))


def gm(preds, labels) -> float | None:
    """Geometric mean of absolute errors (the DIR papers' GM), no epsilon."""
    return geometric_mean(np.abs(_errors(preds, labels)))


def _per_label(metric, preds, labels, groups) -> list[float]:
    preds = np.asarray(preds, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels, dtype=np.float64).reshape(-1)
    groups = labels if groups is None else np.asarray(groups).reshape(-1)
    return [metric(preds[groups == g], labels[groups == g]) for g in np.unique(groups)]


def balanced_mae(preds, labels, groups=None) -> float | None:
    """MAE averaged per label (each label value, or each ``groups`` value such as a bin index, counts once)."""
    values = _per_label(mae, preds, labels, groups)
    return float(np.mean(values)) if values else None


def balanced_mse(preds, labels, groups=None) -> float | None:
    """MSE averaged per label (see ``balanced_mae``)."""
    values = _per_label(mse, preds, labels, groups)
    return float(np.mean(values)) if values else None


def balanced_gm(preds, labels, groups=None) -> float | None:
    """Geometric mean over labels of the per-label GM: every label weighs the same in the log-mean."""
    values = _per_label(gm, preds, labels, groups)
    return geometric_mean(values) if values else None


def error_summary(preds, labels, groups=None) -> dict:
    """All errors of one group of samples: mae, mse, gm, n and the balanced variants (null when empty)."""
    preds = np.asarray(preds, dtype=np.float64).reshape(-1)
    n_labels = int(np.unique(labels if groups is None else groups).size) if preds.size else 0
    return {
        "n": int(preds.size),
        "mae": mae(preds, labels),
        "mse": mse(preds, labels),
        "gm": gm(preds, labels),
        "n_labels": n_labels,
        "balanced_mae": balanced_mae(preds, labels, groups),
        "balanced_mse": balanced_mse(preds, labels, groups),
        "balanced_gm": balanced_gm(preds, labels, groups),
    }
