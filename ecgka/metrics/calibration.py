"""Calibration of the regression and agreement by clinical range: pure functions on arrays.

Calibration line: the OLS fit of the observed (laboratory) K on the predicted K, ``label = a + b * pred``.
A perfectly calibrated model has ``a = 0, b = 1``; a slope above 1 means the predictions are squeezed
toward the mean (each predicted step stands for a larger true step), the imbalance that Dist Loss targets;
below 1, they are spread too wide. CIs come from the subject bootstrap (``ecgka.metrics.bootstrap``).
"""

from __future__ import annotations

import numpy as np

from ecgka.metrics.bootstrap import bootstrap_ci
from ecgka.metrics.clinical import CLINICAL_RANGES


def calibration_line(preds, labels) -> tuple[float, float] | None:
    """``(intercept, slope)`` of the OLS of labels on predictions; None for < 2 samples or constant preds."""
    x = np.asarray(preds, dtype=np.float64).reshape(-1)
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    if x.size < 2:
        return None
    xc = x - x.mean()
    sxx = float(np.sum(xc * xc))
    if sxx <= 0:
        return None
    slope = float(np.sum(xc * (y - y.mean())) / sxx)
    return float(y.mean() - slope * x.mean()), slope


def calibration_fit(preds, labels, subjects, n_boot: int = 1000, seed: int = 0) -> dict:
    """Intercept and slope with subject-bootstrap CIs, and n."""
    preds = np.asarray(preds, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels, dtype=np.float64).reshape(-1)
    subjects = np.asarray(subjects).reshape(-1)
    fit = calibration_line(preds, labels)
    if fit is None:
        return {"n": int(preds.size), "intercept": None, "slope": None, "intercept_ci": None, "slope_ci": None}

    def stat(k):
        def f(idx):
            r = calibration_line(preds[idx], labels[idx])
            return None if r is None else r[k]
        return f

    return {"n": int(preds.size), "intercept": fit[0], "slope": fit[1],
            "intercept_ci": bootstrap_ci(stat(0), subjects, n_boot, seed, estimate=fit[0]),
            "slope_ci": bootstrap_ci(stat(1), subjects, n_boot, seed, estimate=fit[1])}


def calibration_by_group(preds, labels, subjects, groups, names=("many", "median", "few"), n_boot: int = 1000,
                         seed: int = 0) -> dict:
    """``calibration_fit`` overall (``all``) and per shot region (``groups`` holds each sample's region)."""
    preds, labels, subjects, groups = (np.asarray(a).reshape(-1) for a in (preds, labels, subjects, groups))
    out = {"all": calibration_fit(preds, labels, subjects, n_boot, seed)}
    for g in names:
        m = groups == g
        out[g] = calibration_fit(preds[m], labels[m], subjects[m], n_boot, seed)
    return out


def mae_by_clinical_range(preds, labels, subjects, n_boot: int = 1000, seed: int = 0) -> list[dict]:
    """MAE and bias per clinical K range (``CLINICAL_RANGES``) with subject-bootstrap CIs of the MAE."""
    preds = np.asarray(preds, dtype=np.float64).reshape(-1)
    labels = np.round(np.asarray(labels, dtype=np.float64).reshape(-1), 6)
    subjects = np.asarray(subjects).reshape(-1)
    rows = []
    for name, lo, hi in CLINICAL_RANGES:
        m = np.ones(labels.shape, dtype=bool)
        if lo is not None:
            m &= labels >= lo
        if hi is not None:
            m &= labels < hi
        err = preds[m] - labels[m]
        value = float(np.mean(np.abs(err))) if err.size else None
        ci = None
        if err.size:
            ae = np.abs(err)
            ci = bootstrap_ci(lambda idx, ae=ae: float(np.mean(ae[idx])) if idx.size else None, subjects[m],
                              n_boot, seed, estimate=value)
        rows.append({"range": name, "n": int(m.sum()), "mae": value, "mae_ci": ci,
                     "bias": float(np.mean(err)) if err.size else None})
    return rows
