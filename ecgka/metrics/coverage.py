"""How well the conformal layer's intervals, accepted sets and probabilities hold on a split: coverage and
width per range of the true label (with exact Clopper-Pearson CIs), Brier scores and reliability bins. Pure
functions of labels and columns; the layer itself is ``ecgka.metrics.conformal``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.stats import beta

from ecgka.keys import UNCERTAINTY_LEVELS, interval_columns
from ecgka.labels import LabelGrid
from ecgka.metrics.clinical import CONDITIONS, UNCERTAINTY_RANGES, applies_to
from ecgka.metrics.conformal import LabelConditionalCPS

LEVELS = UNCERTAINTY_LEVELS


def coverage_groups(labels, grid: LabelGrid | None = None, train_counts=None) -> dict[str, np.ndarray]:
    """Boolean masks of the ECGs to report coverage on: ``all``, the clinical ranges of the true K (potassium
    grids, or no grid given) and, with ``train_counts``, the shot groups ``many``, ``median``, ``few``."""
    y = np.asarray(labels, dtype=np.float64)
    out = {"all": np.isfinite(y)}
    if grid is None or applies_to(grid):
        k = np.round(y, 6)
        for name, lo, hi in UNCERTAINTY_RANGES:
            out[name] = (k >= (-np.inf if lo is None else lo)) & (k < (np.inf if hi is None else hi))
    if grid is not None and train_counts is not None:
        shots = grid.assign_groups(y, np.asarray(train_counts))
        for g in ("many", "median", "few"):
            out[g] = shots == g
    return out


def _clopper_pearson(k: int, n: int, conf: float = 0.95) -> tuple[float, float]:
    a = 1 - conf
    lo = 0.0 if k == 0 else float(beta.ppf(a / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a / 2, k + 1, n - k))
    return lo, hi


def uncertainty_metrics(labels, predictions_columns: Mapping[str, np.ndarray], groups: Mapping[str, np.ndarray],
                        levels: Sequence[float] = LEVELS, layer: LabelConditionalCPS | None = None,
                        predictions=None) -> list[dict[str, Any]]:
    """Coverage and mean width of the intervals per group of ECGs (name -> boolean mask) and level:
    rows ``{range, level, n, coverage, mean_width, ci_lower, ci_upper}`` (exact 95 % Clopper-Pearson CI;
    None on an empty group). A level whose columns are absent is skipped. Endpoints and labels are compared
    after rounding to 6 decimals (float32 storage cannot turn a hit into a miss). Given the layer and the
    predictions, each row also has ``set_coverage`` (with ``set_ci_lower``, ``set_ci_upper``) and
    ``set_mean_length``: the same for the accepted set whose hull the interval is (:meth:`LabelConditionalCPS.sets`)."""
    y = np.round(np.asarray(labels, dtype=np.float64), 6)
    with_set = layer is not None and predictions is not None
    in_set = layer.in_set(y, predictions) if with_set else {}
    set_length = layer.set_length(predictions) if with_set else {}
    rows = []
    for level in levels:
        lo_name, hi_name = interval_columns(level)
        if lo_name not in predictions_columns or hi_name not in predictions_columns:
            continue
        lo = np.round(np.asarray(predictions_columns[lo_name], dtype=np.float64), 6)
        hi = np.round(np.asarray(predictions_columns[hi_name], dtype=np.float64), 6)
        hit = (lo <= y) & (y <= hi)
        width = hi - lo
        for name, mask in groups.items():
            mask = np.asarray(mask, dtype=bool) & np.isfinite(y) & np.isfinite(lo) & np.isfinite(hi)
            n = int(mask.sum())
            k = int(hit[mask].sum())
            ci = _clopper_pearson(k, n) if n else (None, None)
            row = {"range": name, "level": float(level), "n": n, "coverage": k / n if n else None,
                   "mean_width": float(width[mask].mean()) if n else None, "ci_lower": ci[0], "ci_upper": ci[1]}
            if level in in_set:
                k_set = int(in_set[level][mask].sum())
                set_ci = _clopper_pearson(k_set, n) if n else (None, None)
                row.update(set_coverage=k_set / n if n else None, set_ci_lower=set_ci[0], set_ci_upper=set_ci[1],
                           set_mean_length=float(set_length[level][mask].mean()) if n else None)
            rows.append(row)
    return rows


def probability_metrics(labels, probabilities: Mapping[str, np.ndarray], n_bins: int = 10) -> dict[str, Any]:
    """Per clinical condition with a probability column: Brier score, the Brier score of the constant
    prevalence (the naive baseline), and the reliability curve on ``n_bins`` equal-width bins of the
    predicted probability (``{lo, hi, n, mean_predicted, observed}``; empty bins left out)."""
    y = np.asarray(labels, dtype=np.float64)
    out: dict[str, Any] = {}
    for name, condition in CONDITIONS.items():
        column = f"p_{name}"
        if column not in probabilities:
            continue
        p = np.asarray(probabilities[column], dtype=np.float64)
        ok = np.isfinite(p) & np.isfinite(y)
        p, truth = p[ok], condition.positive(y[ok]).astype(np.float64)
        n = int(p.size)
        if n == 0:
            out[name] = {"column": column, "definition": condition.definition, "n": 0, "brier": None,
                         "brier_baseline": None, "reliability": []}
            continue
        prevalence = float(truth.mean())
        cells = np.clip(np.floor(p * n_bins), 0, n_bins - 1).astype(np.int64)
        count = np.bincount(cells, minlength=n_bins)
        mean_p = np.bincount(cells, p, minlength=n_bins)
        observed = np.bincount(cells, truth, minlength=n_bins)
        curve = [{"lo": i / n_bins, "hi": (i + 1) / n_bins, "n": int(count[i]),
                  "mean_predicted": float(mean_p[i] / count[i]), "observed": float(observed[i] / count[i])}
                 for i in range(n_bins) if count[i]]
        out[name] = {"column": column, "definition": condition.definition, "n": n,
                     "n_positive": int(truth.sum()), "prevalence": prevalence,
                     "brier": float(np.mean((p - truth) ** 2)),
                     "brier_baseline": float(np.mean((prevalence - truth) ** 2)), "reliability": curve}
    return out
