"""Coverage per range of the true K at 90 %: plain split conformal, Mondrian by predicted K, and the
label-conditional layer (``ecgka.metrics.conformal``), on the issue's simulation (numpy only, seconds).

The simulation: potassium-like imbalance (85 % near 4.2 mmol/L with sd 0.45, 8 % hypo tail uniform on
2.0-3.5, 7 % hyper tail uniform on 5.0-7.5, labels on the 0.1 grid), a model that shrinks toward the mean
(``yhat = 4.2 + 0.6 (y - 4.2) + N(0, 0.35)``). Training labels give the prior and the shot groups; the
calibration set plays the validation split; coverage is measured on a separate test set. The layer is
fitted as ``ecgka evaluate`` fits it (all of ``LEVELS``: bins merged for 90 %, pooled for 95 %) with each
conformity score: ``label_conditional`` (residual ``y - yhat``) and ``label_conditional_calibrated``
(``yhat - (intercept + slope y)``, the line fitted on the calibration set).
Usage: python benchmarks/bench_conformal.py [--n-cal 6000] [--n-test 50000] [--seed 0] [--level 0.9]
Prints one JSON object: {method: {range: {n, coverage, mean_width}}}.

``--draws N`` instead repeats the simulation N times at ``--n-cal`` / ``--n-test`` (e.g. 937 / 937, the larger
stand-in run's split sizes) with the default (calibrated) layer, and prints, for the interval and for the
accepted set, the mean and 5-95 % range of the coverage per range over the draws and the share of draws in
which every range with at least 30 test ECGs lies within 0.85-0.95: how often an exact method meets the
issue's goal at that size, when calibration and test sets are exchangeable by construction.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np

from ecgka.keys import interval_columns
from ecgka.labels import LabelGrid
from ecgka.metrics.clinical import UNCERTAINTY_RANGES
from ecgka.metrics.conformal import LEVELS, SCORES, fit_label_conditional, mondrian_edges
from ecgka.metrics.coverage import coverage_groups, uncertainty_metrics

GRID = LabelGrid.preset("potassium")
MEAN = 4.2
METHOD = {"residual": "label_conditional", "calibrated": "label_conditional_calibrated"}  # the layer's scores


def simulate(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(labels, predictions) of ``n`` ECGs."""
    rng = np.random.default_rng(seed)
    u = rng.random(n)
    y = np.where(u < 0.85, rng.normal(MEAN, 0.45, n), np.where(u < 0.93, rng.uniform(2.0, 3.5, n),
                                                               rng.uniform(5.0, 7.5, n)))
    y = np.round(np.clip(y, 1.5, 10.0), 1)
    yhat = MEAN + 0.6 * (y - MEAN) + rng.normal(0, 0.35, n)
    return y, yhat


def _abs_quantile(r: np.ndarray, level: float) -> float:
    k = math.ceil(level * (r.size + 1))
    return float(np.sort(np.abs(r))[k - 1]) if k <= r.size else math.inf


def plain_split(y_cal, p_cal, p_test, level):
    q = _abs_quantile(y_cal - p_cal, level)
    return p_test - q, p_test + q


def by_prediction(y_cal, p_cal, p_test, level):
    """Mondrian by the predicted K's range (the ranges of the true K applied to the prediction)."""
    edges = sorted({v for _, lo, hi in UNCERTAINTY_RANGES for v in (lo, hi) if v is not None})
    cal, test = np.searchsorted(edges, p_cal, side="right"), np.searchsorted(edges, p_test, side="right")
    q = np.full(len(edges) + 1, _abs_quantile(y_cal - p_cal, level))  # an empty category: the plain one
    for b in np.unique(cal):
        q[b] = _abs_quantile(y_cal[cal == b] - p_cal[cal == b], level)
    return p_test - q[test], p_test + q[test]


def compare(n_train: int = 50000, n_cal: int = 6000, n_test: int = 50000, seed: int = 0,
            level: float = 0.9) -> dict:
    y_train, _ = simulate(n_train, seed)
    y_cal, p_cal = simulate(n_cal, seed + 1)
    y_test, p_test = simulate(n_test, seed + 2)
    counts = GRID.counts(y_train)
    layers = {score: fit_label_conditional(y_cal, p_cal, edges=mondrian_edges(GRID, counts), prior_counts=counts,
                                           prior_lo=GRID.lo, prior_step=GRID.step, levels=LEVELS, seed=seed,
                                           score=score) for score in SCORES}
    lo_name, hi_name = interval_columns(level)
    methods = {"plain": plain_split(y_cal, p_cal, p_test, level),
               "by_prediction": by_prediction(y_cal, p_cal, p_test, level)}
    for score, layer in layers.items():
        ours = layer.intervals(p_test)
        methods[METHOD[score]] = (ours[lo_name], ours[hi_name])
    groups = coverage_groups(y_test, GRID, counts)
    table = {}
    for name, (lo, hi) in methods.items():
        rows = uncertainty_metrics(y_test, {lo_name: lo, hi_name: hi}, groups, levels=(level,))
        table[name] = {r["range"]: {"n": r["n"], "coverage": None if r["coverage"] is None else round(r["coverage"], 3),
                                    "mean_width": None if r["mean_width"] is None else round(r["mean_width"], 3)}
                       for r in rows}
    layer = layers["residual"]
    table["label_conditional_bins"] = [{"lo": b.lo, "hi": b.hi, "n": b.n} for b in layer.bins]
    table["merged"] = layer.merged
    table["calibrated_line"] = {"intercept": round(layers["calibrated"].intercept, 4),
                                "slope": round(layers["calibrated"].slope, 4)}
    return table


BAND = (0.85, 0.95)
MIN_RANGE_N = 30


def band_draws(draws: int, n_cal: int, n_test: int, seed: int = 0, level: float = 0.9,
               n_train: int = 50000) -> dict:
    """Coverage of the interval and of the accepted set per range over ``draws`` independent draws."""
    y_train, _ = simulate(n_train, seed)
    counts = GRID.counts(y_train)
    lo_name, hi_name = interval_columns(level)
    per = {"interval": {}, "set": {}}
    every = {"interval": 0, "set": 0}
    for d in range(draws):
        y_cal, p_cal = simulate(n_cal, seed + 1 + 2 * d)
        y_test, p_test = simulate(n_test, seed + 2 + 2 * d)
        layer = fit_label_conditional(y_cal, p_cal, edges=mondrian_edges(GRID, counts), prior_counts=counts,
                                      prior_lo=GRID.lo, prior_step=GRID.step, levels=LEVELS, score="calibrated")
        rows = uncertainty_metrics(y_test, layer.intervals(p_test), coverage_groups(y_test, GRID, counts),
                                   levels=(level,), layer=layer, predictions=p_test)
        rows = [r for r in rows if r["n"] >= MIN_RANGE_N]
        for what, key in (("interval", "coverage"), ("set", "set_coverage")):
            for r in rows:
                per[what].setdefault(r["range"], []).append(r[key])
            every[what] += all(BAND[0] <= r[key] <= BAND[1] for r in rows)
    return {what: {"share_of_draws_every_range_in_band": round(every[what] / draws, 3),
                   "coverage": {name: {"mean": round(float(np.mean(v)), 3),
                                       "p5_p95": [round(float(q), 3) for q in np.quantile(v, [0.05, 0.95])],
                                       "draws": len(v)} for name, v in per[what].items()}}
            for what in per} | {"draws": draws, "n_cal": n_cal, "n_test": n_test}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-train", type=int, default=50000)
    ap.add_argument("--n-cal", type=int, default=6000)
    ap.add_argument("--n-test", type=int, default=50000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--level", type=float, default=0.9)
    ap.add_argument("--draws", type=int, default=0, help="repeat at this size and count the draws in the band")
    args = ap.parse_args()
    t0 = time.perf_counter()
    if args.draws:
        table = band_draws(args.draws, args.n_cal, args.n_test, args.seed, args.level, args.n_train)
    else:
        table = compare(args.n_train, args.n_cal, args.n_test, args.seed, args.level)
    table["seconds"] = round(time.perf_counter() - t0, 3)
    print(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
