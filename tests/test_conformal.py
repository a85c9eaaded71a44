"""The label-conditional conformal layer (``ecgka.metrics.conformal``): against a naive implementation and
crepes on the same numbers, merging, determinism, JSON, probabilities, and the issue's simulation."""

from __future__ import annotations

import importlib.util
import json
import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from ecgka.errors import InputError
from ecgka.keys import PROBABILITY_COLUMNS, UNCERTAINTY_COLUMNS, interval_columns, set_column
from ecgka.labels import LabelGrid
from ecgka.metrics.clinical import CONDITIONS
from ecgka.metrics.conformal import (
    LEVELS,
    SLOPE_FLOOR,
    LabelConditionalCPS,
    fit_label_conditional,
    layer_from_json,
    min_points,
    mondrian_edges,
)
from ecgka.metrics.coverage import coverage_groups, probability_metrics, uncertainty_metrics

GRID = LabelGrid.preset("potassium")
BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_conformal.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_conformal", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _sim(n: int, seed: int):
    return _bench().simulate(n, seed)


def _fit(y, yhat, train=None, **kw):
    counts = GRID.counts(y if train is None else train)
    return fit_label_conditional(y, yhat, edges=mondrian_edges(GRID, counts), prior_counts=counts,
                                 prior_lo=GRID.lo, prior_step=GRID.step, **kw)


@pytest.fixture(scope="module")
def fitted():
    y_train, _ = _sim(20000, 1)
    y, yhat = _sim(4000, 2)
    return _fit(y, yhat, train=y_train), y, yhat


def test_keys_and_edges():
    assert interval_columns(0.9) == ("k_lo_90", "k_hi_90")
    assert UNCERTAINTY_COLUMNS[-4:] == PROBABILITY_COLUMNS
    assert PROBABILITY_COLUMNS == tuple(f"p_{name}" for name in CONDITIONS)
    assert mondrian_edges(GRID) == [2.5, 3.0, 3.5, 5.5, 6.0, 6.5]
    counts = np.zeros(GRID.n_bins)
    counts[GRID.bin_index([4.0, 4.1, 4.2])] = 100  # many; 3.9 and 4.3 median; the rest few (empty)
    counts[GRID.bin_index([3.9, 4.3])] = 30
    edges = mondrian_edges(GRID, counts)
    assert {3.85, 3.95, 4.25, 4.35} <= set(edges) and 4.05 not in edges
    age = LabelGrid.preset("age")
    assert mondrian_edges(age) == []  # clinical K edges do not apply to ages
    assert min_points(0.8) == 9 and min_points(0.9) == 19 and min_points(0.95) == 39


def _residual(y, yhat):
    return y - yhat


def _naive_interval(y_cal, yhat_cal, edges, level, yhat, lo_grid, hi_grid, step=1e-3, score=_residual):
    """Brute force: the hull of the accepted candidates (:func:`_naive_accepted`), None when none is."""
    cand, accepted = _naive_accepted(y_cal, yhat_cal, edges, level, yhat, lo_grid, hi_grid, step, score)
    if not accepted.any():
        return None
    return cand[accepted].min(), cand[accepted].max()


def _naive_accepted(y_cal, yhat_cal, edges, level, yhat, lo_grid, hi_grid, step=1e-3, score=_residual):
    """Brute force: every candidate K on a fine grid, accepted when both conformal p-values of its
    score (default: the residual) among its own bin's scores exceed a/2: (candidates, accepted)."""
    half = (1 - Fraction(str(level))) / 2  # exact: (m + 1)/(n + 1) > a/2 in floats misjudges 7/70 > 0.1
    cats_cal = np.searchsorted(edges, np.round(y_cal, 6), side="right")
    cand = np.round(np.arange(lo_grid, hi_grid + step / 2, step), 6)
    cats = np.searchsorted(edges, cand, side="right")
    accepted = np.zeros(cand.size, dtype=bool)
    for b in np.unique(cats):
        r = score(y_cal[cats_cal == b], yhat_cal[cats_cal == b])
        n = r.size
        t = score(cand[cats == b], yhat)
        below = (r[None, :] <= t[:, None]).sum(1)
        above = (r[None, :] >= t[:, None]).sum(1)
        thr = half * (n + 1)  # p-value (count + 1)/(n + 1) > a/2  <=>  (count + 1) * den > num
        accepted[cats == b] = ((below + 1) * thr.denominator > thr.numerator) & (
            (above + 1) * thr.denominator > thr.numerator)
    return cand, accepted


def test_intervals_equal_brute_force_hull():
    rng = np.random.default_rng(5)
    y = np.round(rng.uniform(2.0, 7.5, 600), 1)
    yhat = 4.2 + 0.6 * (y - 4.2) + rng.normal(0, 0.3, y.size)
    layer = fit_label_conditional(y, yhat, edges=[3.0, 3.5, 5.5, 6.0], prior_counts=GRID.counts(y),
                                  prior_lo=GRID.lo, prior_step=GRID.step, levels=(0.8, 0.9))
    assert not layer.merged
    queries = np.array([2.4, 3.1, 3.8, 4.2, 4.9, 5.6, 6.3])
    cols = layer.intervals(queries)
    for level in (0.8, 0.9):
        lo_name, hi_name = interval_columns(level)
        for i, q in enumerate(queries):
            naive = _naive_interval(y, yhat, np.array(layer.edges), level, q, GRID.lo, GRID.hi)
            assert naive is not None
            # the hull's ends are bin edges (half-open bins: the naive grid stops one step short) or yhat + q
            assert cols[lo_name][i] == pytest.approx(naive[0], abs=1.5e-3)
            assert cols[hi_name][i] == pytest.approx(naive[1], abs=1.5e-3)


def test_calibrated_intervals_equal_brute_force_hull():
    """The calibrated score ``yhat - (intercept + slope y)``, its line the least-squares fit of the predictions
    on the labels: each bin's accepted set is ``(yhat - q - intercept) / slope`` between its quantiles, and the
    hull equals a brute-force acceptance of candidate K values by their conformal p-values."""
    rng = np.random.default_rng(6)
    y = np.round(rng.uniform(2.0, 7.5, 600), 1)
    yhat = 4.2 + 0.35 * (y - 4.2) + rng.normal(0, 0.25, y.size)  # strong shrinkage, as the weak demo model
    layer = fit_label_conditional(y, yhat, edges=[3.0, 3.5, 5.5, 6.0], prior_counts=GRID.counts(y),
                                  prior_lo=GRID.lo, prior_step=GRID.step, levels=(0.8, 0.9), score="calibrated")
    slope, intercept = np.polyfit(y, yhat, 1)
    assert layer.score == "calibrated" and not layer.score_note
    assert (layer.slope, layer.intercept) == pytest.approx((slope, intercept), abs=1e-9)

    def score(k, p):
        return p - (intercept + slope * k)

    residual = fit_label_conditional(y, yhat, edges=[3.0, 3.5, 5.5, 6.0], prior_counts=GRID.counts(y),
                                     prior_lo=GRID.lo, prior_step=GRID.step, levels=(0.8, 0.9))
    queries = np.array([3.3, 3.6, 3.9, 4.2, 4.5, 4.8, 5.1, 0.5])  # the last: far below every bin's scores
    cols, res_cols = layer.intervals(queries), residual.intervals(queries)
    for level in (0.8, 0.9):
        lo_name, hi_name = interval_columns(level)
        for i, q in enumerate(queries):
            naive = _naive_interval(y, yhat, np.array(layer.edges), level, q, GRID.lo, GRID.hi, score=score)
            if naive is None:  # nothing accepted: [yhat, yhat] clipped to the label range
                naive = (max(q, GRID.lo),) * 2
                assert i == queries.size - 1
            assert cols[lo_name][i] == pytest.approx(naive[0], abs=1.5e-3)
            assert cols[hi_name][i] == pytest.approx(naive[1], abs=1.5e-3)
        # the point of the score: narrower than the residual one's hull on a shrinking model
        width = np.mean(cols[hi_name][:-1] - cols[lo_name][:-1])
        assert width < np.mean(res_cols[hi_name][:-1] - res_cols[lo_name][:-1])


def test_calibrated_score_deterministic_json_and_fallback(fitted):
    _, y, yhat = fitted
    layer = _fit(y, yhat, score="calibrated")
    assert layer.model_dump() == _fit(y, yhat, score="calibrated").model_dump()
    back = layer_from_json(json.loads(json.dumps(layer.model_dump(mode="json"))))
    assert back == layer and back.score == "calibrated"
    preds = np.concatenate([yhat[:500], [np.nan, -3.0, 25.0]])
    cols = layer.columns(preds)
    for k, v in back.columns(preds).items():
        np.testing.assert_array_equal(v, cols[k])
    assert np.isnan(cols["k_lo_90"][-3]) and np.all(cols["k_lo_95"][:-3] <= cols["k_lo_80"][:-3])
    assert "calibrated" in layer.formula and "(yhat - q_hi[l]_b - intercept) / slope" in layer.formula
    # a model that barely follows the label (slope <= the floor), or labels that do not vary: residual score
    rng = np.random.default_rng(0)
    flat = 4.2 + 0.02 * (y - 4.2) + rng.normal(0, 0.3, y.size)
    for labels, preds_ in ((y, flat), (np.full(300, 4.0), flat[:300])):
        fallback = _fit(labels, preds_, score="calibrated")
        assert (fallback.score, fallback.intercept, fallback.slope) == ("residual", 0.0, 1.0)
        assert f"not above {SLOPE_FLOOR}): residual score used" in fallback.score_note
        plain = _fit(labels, preds_)
        assert fallback.model_dump() == {**plain.model_dump(), "score_note": fallback.score_note}
    with pytest.raises(InputError, match="conformal score 'ratio'"):
        _fit(y, yhat, score="ratio")
    # a layer stored before the score existed reads as the residual one
    old = _fit(y, yhat).model_dump(mode="json")
    for key in ("score", "intercept", "slope", "score_note"):
        old.pop(key)
    assert layer_from_json(old) == _fit(y, yhat)


@pytest.mark.parametrize("level", LEVELS)
def test_quantiles_equal_crepes_mondrian(level):
    """Our per-bin residual quantiles are crepes' Mondrian CPS percentiles on the same residuals: crepes'
    ``lower_percentiles`` (floor rank) and ``higher_percentiles`` (ceil rank) at a/2 and 1-a/2, passed as
    exact percentages (``predict_int`` computes them as (1-c)/2*100 in floating point, which can drop a rank
    when a/2 (n+1) is a whole number). Bin sizes 39..80 cover whole and fractional ranks."""
    crepes = pytest.importorskip("crepes")
    rng = np.random.default_rng(11)
    sizes = list(range(39, 81))
    y = np.concatenate([np.full(n, 2.0 + 0.1 * i) for i, n in enumerate(sizes)])
    yhat = y + rng.normal(0, 0.4, y.size).round(3)  # rounded: ties among residuals
    edges = [round(2.05 + 0.1 * i, 6) for i in range(len(sizes) - 1)]
    layer = fit_label_conditional(y, yhat, edges=edges, prior_counts=GRID.counts(y), prior_lo=GRID.lo,
                                  prior_step=GRID.step, levels=(level,))
    assert [b.n for b in layer.bins] == sizes
    cats = np.searchsorted(edges, np.round(y, 6), side="right")
    cps = crepes.ConformalPredictiveSystem().fit(y - yhat, bins=cats)
    half = float((100 - round(level * 100, 6)) / 2)
    queries = np.array([0.0, 3.3, 4.71])
    for b, bin_ in enumerate(layer.bins):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            got = cps.predict(queries, bins=np.full(queries.size, b), lower_percentiles=half,
                              higher_percentiles=100 - half)
        np.testing.assert_array_equal(got[:, 0], queries + bin_.q_lo[0])
        np.testing.assert_array_equal(got[:, 1], queries + bin_.q_hi[0])


def test_small_bins_merged_and_recorded():
    rng = np.random.default_rng(3)
    y = np.concatenate([rng.uniform(3.6, 5.4, 400).round(1), np.full(12, 6.2), np.full(30, 5.7)])
    yhat = y + rng.normal(0, 0.3, y.size)
    layer = fit_label_conditional(y, yhat, edges=[3.5, 5.5, 6.0], prior_counts=GRID.counts(y), prior_lo=GRID.lo,
                                  prior_step=GRID.step, levels=(0.9,))
    assert layer.min_points == 19
    # "< 3.5" (0 points) merges into 3.5-5.5; ">= 6.0" (12) merges with 5.5-6.0 (30)
    assert [(b.lo, b.hi, b.n) for b in layer.bins] == [(None, 5.5, 400), (5.5, None, 42)]
    assert layer.bins[1].merged_from == [(5.5, 6.0), (6.0, None)]
    assert len(layer.merged) == 2 and "< 3.5 (n=0) merged with 3.5 to < 5.5 (n=400)" in layer.merged[0]
    assert ">= 6.0 (n=12) merged with 5.5 to < 6.0 (n=30)" in layer.merged[1]
    assert "fewer than 19" in layer.merge_note()
    assert all(b.q_lo[0] is not None and b.q_hi[0] is not None for b in layer.bins)


def test_tiny_calibration_set_gives_the_whole_range():
    y, yhat = np.array([4.0, 4.5, 5.0]), np.array([4.1, 4.4, 5.2])
    layer = fit_label_conditional(y, yhat, edges=[3.5, 5.5], prior_counts=GRID.counts(y), prior_lo=GRID.lo,
                                  prior_step=GRID.step)
    assert len(layer.bins) == 1 and layer.bins[0].q_lo == [None] * 3
    cols = layer.intervals(np.array([4.3]))
    assert cols["k_lo_90"][0] == np.float32(GRID.lo) and cols["k_hi_90"][0] == np.float32(GRID.hi)
    assert json.loads(json.dumps(layer.model_dump(mode="json")))["bins"][0]["q_hi"] == [None] * 3


def test_interval_properties_determinism_and_json(fitted):
    layer, y, yhat = fitted
    preds = np.concatenate([yhat, [np.nan, -3.0, 25.0]])
    cols = layer.columns(preds)
    assert tuple(cols) == UNCERTAINTY_COLUMNS == layer.column_names
    for level in LEVELS:
        lo, hi = (cols[c] for c in interval_columns(level))
        assert lo.dtype == np.float32 and np.isnan(lo[-3]) and np.isnan(hi[-3])
        assert np.all(lo[:-3] <= hi[:-3]) and lo[-2] >= GRID.lo and hi[-1] <= GRID.hi
    # nested levels: a wider level's interval holds the narrower one's
    assert np.all(cols["k_lo_95"][:-3] <= cols["k_lo_80"][:-3]) and np.all(cols["k_hi_95"][:-3] >= cols["k_hi_80"][:-3])
    again = _fit(y, yhat, train=_sim(20000, 1)[0])
    assert again.model_dump() == layer.model_dump()
    text = json.dumps(layer.model_dump(mode="json"))
    back = layer_from_json(json.loads(text))
    assert back == layer and isinstance(back, LabelConditionalCPS)
    for k, v in back.columns(preds).items():
        np.testing.assert_array_equal(v, cols[k])
    # a copy with another prior recomputes the probabilities (no stale cached arrays)
    prior = np.zeros(GRID.n_bins)
    prior[GRID.bin_index(6.0)] = 1.0
    shifted = layer.model_copy(update={"prior": prior.tolist()})
    assert shifted.probabilities(preds[:5])["p_hyper"].tolist() == [1.0] * 5
    with pytest.raises(InputError, match="uncertainty.json: bad conformal layer"):
        layer_from_json({**json.loads(text), "bins": "x"})
    with pytest.raises(InputError, match="schema"):
        layer_from_json({**json.loads(text), "schema_version": 99})


def test_probabilities_in_range_monotone_and_calibrated(fitted):
    layer, _, _ = fitted
    y_test, yhat_test = _sim(20000, 3)
    probs = layer.probabilities(yhat_test)
    for p in probs.values():
        assert p.dtype == np.float32 and np.all((p >= 0) & (p <= 1))
    # monotone in the threshold: severe conditions are subsets of their milder ones
    assert np.all(probs["p_severe_hypo"] <= probs["p_hypo"] + 1e-6)
    assert np.all(probs["p_severe_hyper"] <= probs["p_hyper"] + 1e-6)
    # monotone in the prediction: a higher predicted K never lowers P(hyper) much
    grid = np.linspace(3.0, 6.5, 36)
    p_hyper = layer.probabilities(grid)["p_hyper"]
    assert p_hyper[-1] > 0.5 > p_hyper[0] and np.all(np.diff(p_hyper) > -0.05)
    metrics = probability_metrics(y_test, probs)
    for name in CONDITIONS:
        m = metrics[name]
        assert m["brier"] < m["brier_baseline"], name
        big = [b for b in m["reliability"] if b["n"] >= 200]
        assert big and all(abs(b["mean_predicted"] - b["observed"]) < 0.12 for b in big), (name, big)
        # calibration in the large
        assert abs(np.mean(probs[m["column"]]) - m["prevalence"]) < 0.02


def test_uncertainty_metrics_rows():
    y = np.array([2.8, 3.2, 4.0, 5.7, 6.5, 4.4])
    cols = {"k_lo_90": np.array([2.5, 3.3, 3.5, 5.0, 6.0, 4.0], dtype=np.float32),
            "k_hi_90": np.array([3.0, 3.6, 4.5, 6.0, 6.5, 4.4], dtype=np.float32)}
    groups = coverage_groups(y)
    rows = uncertainty_metrics(y, cols, groups)
    assert [r["range"] for r in rows] == ["all", "< 3.0", "3.0 to < 3.5", "3.5 to < 5.5", "5.5 to < 6.0", ">= 6.0"]
    by = {r["range"]: r for r in rows}
    assert by["all"]["coverage"] == pytest.approx(5 / 6) and by["all"]["n"] == 6
    assert by["3.0 to < 3.5"]["coverage"] == 0.0 and by[">= 6.0"]["coverage"] == 1.0  # 6.5 on the edge counts
    assert by["< 3.0"]["mean_width"] == pytest.approx(0.5)
    assert 0 <= by["all"]["ci_lower"] < 5 / 6 < by["all"]["ci_upper"] <= 1
    shots = coverage_groups(y, GRID, GRID.counts(np.r_[np.full(50, 4.0), y]))
    assert {"many", "median", "few"} <= set(shots) and shots["many"].sum() == 1


def test_issue_simulation_plain_conformal_fails_ours_holds():
    """The issue's simulation (potassium-like imbalance, a model shrinking toward the mean): plain split
    conformal undercovers K >= 6.0 badly; label-conditional holds 0.85-0.95 in every range."""
    table = _bench().compare(n_train=20000, n_cal=6000, n_test=20000, seed=0)
    plain, ours, calibrated = table["plain"], table["label_conditional"], table["label_conditional_calibrated"]
    assert plain["all"]["coverage"] == pytest.approx(0.9, abs=0.02)
    assert plain[">= 6.0"]["coverage"] < 0.5
    assert table["by_prediction"][">= 6.0"]["coverage"] < 0.75
    for name, row in [*ours.items(), *calibrated.items()]:
        if row["n"] >= 200:
            assert 0.85 <= row["coverage"] <= 0.95, (name, row)
    assert table["calibrated_line"]["slope"] == pytest.approx(0.6, abs=0.03)  # the simulated shrinkage
    assert ours[">= 6.0"]["mean_width"] > ours["3.5 to < 5.5"]["mean_width"] * 0.7


def test_acceptance_equals_crepes_p_values():
    """A candidate K of a bin is accepted (inside the bin's unclipped piece ``yhat + [q_lo, q_hi]``) exactly
    when crepes' non-smoothed CPS p-values on both sides exceed a/2: ``predict_p(yhat, y, smoothing=False)``
    = (#{r <= y - yhat} + 1)/(n + 1) on the residuals, and the same on the negated residuals for the upper
    side. The p-values are turned back into counts (p (n + 1) is a whole number) and compared exactly."""
    crepes = pytest.importorskip("crepes")
    rng = np.random.default_rng(4)
    r = rng.normal(0, 0.4, 57).round(2)  # ties
    y = np.full(r.size, 4.0)
    layer = fit_label_conditional(y, y - r, edges=[], prior_counts=GRID.counts(y), prior_lo=GRID.lo,
                                  prior_step=GRID.step)
    below = crepes.ConformalPredictiveSystem().fit(r)
    above = crepes.ConformalPredictiveSystem().fit(-r)
    yhat = np.full(400, 4.1)
    cand = np.round(np.linspace(2.5, 5.7, 400), 2)
    n = r.size
    m_lo = np.rint(below.predict_p(yhat, cand, smoothing=False) * (n + 1)).astype(int)
    m_hi = np.rint(above.predict_p(-yhat, -cand, smoothing=False) * (n + 1)).astype(int)
    for i, level in enumerate(layer.levels):
        thr = (1 - Fraction(str(level))) / 2 * (n + 1)
        crepes_accepts = (m_lo * thr.denominator > thr.numerator) & (m_hi * thr.denominator > thr.numerator)
        q_lo, q_hi = layer.bins[0].q_lo[i], layer.bins[0].q_hi[i]
        ours = (yhat + q_lo <= cand) & (cand <= yhat + q_hi)
        np.testing.assert_array_equal(ours, crepes_accepts)
        assert ours.any() and not ours.all()


def test_the_accepted_set_holds_the_guarantee_its_hull_widens():
    """``in_set``: the true value lies in its own bin's accepted piece, equal to a brute-force acceptance of that
    value by its conformal p-values; the set's length is the sum of its pieces, at most the hull's width, and
    the hull covers whenever the set does."""
    rng = np.random.default_rng(8)
    y = np.round(rng.uniform(2.0, 7.5, 600), 1)
    yhat = 4.2 + 0.35 * (y - 4.2) + rng.normal(0, 0.25, y.size)
    y_test = np.round(rng.uniform(2.0, 7.5, 300), 1)
    p_test = 4.2 + 0.35 * (y_test - 4.2) + rng.normal(0, 0.25, y_test.size)
    for score in ("residual", "calibrated"):
        layer = fit_label_conditional(y, yhat, edges=[3.0, 3.5, 5.5, 6.0], prior_counts=GRID.counts(y),
                                      prior_lo=GRID.lo, prior_step=GRID.step, levels=(0.8, 0.9), score=score)
        member, length = layer.in_set(y_test, p_test), layer.set_length(p_test)
        cols = layer.intervals(p_test)
        edges = np.array(layer.edges)
        a, c = layer.intercept, layer.slope

        def one(k, p, a=a, c=c, residual=score == "residual"):
            return k - p if residual else p - (a + c * k)

        for level in (0.8, 0.9):
            lo, hi = (cols[c].astype(np.float64) for c in interval_columns(level))
            assert np.all(member[level] <= ((lo <= y_test + 1e-6) & (y_test <= hi + 1e-6)))  # set in hull
            assert np.all(length[level] <= hi - lo + 1e-5) and np.all(length[level] >= 0)
            for i in range(0, y_test.size, 25):  # the brute force on the true value alone
                naive = _naive_interval(y, yhat, edges, level, p_test[i], y_test[i], y_test[i], score=one)
                assert member[level][i] == (naive is not None)
        rows = uncertainty_metrics(y_test, cols, coverage_groups(y_test), layer=layer, predictions=p_test,
                                   levels=(0.8, 0.9))
        for r in rows:
            mask = coverage_groups(y_test)[r["range"]]
            assert r["set_coverage"] == pytest.approx(member[r["level"]][mask].mean())
            assert r["set_mean_length"] == pytest.approx(length[r["level"]][mask].mean())
            assert r["set_coverage"] <= r["coverage"] + 1e-12 and r["set_mean_length"] <= r["mean_width"] + 1e-5


@pytest.mark.parametrize("score", ["residual", "calibrated"])
def test_accepted_set_column_equals_brute_force_acceptance(score):
    """``k_set_<level>``: sorted, disjoint, closed pieces whose union is the brute-force accepted set of
    candidate K (to the 0.001 grid), whose hull is the interval, one piece per gap of rejected K; NaN: None."""
    rng = np.random.default_rng(11)
    y = np.round(rng.uniform(2.0, 7.5, 500), 1)
    yhat = 4.2 + 0.3 * (y - 4.2) + rng.normal(0, 0.35, y.size)  # weak: the tails' pieces split off
    edges = [3.0, 3.5, 5.5, 6.0]
    layer = fit_label_conditional(y, yhat, edges=edges, prior_counts=GRID.counts(y), prior_lo=GRID.lo,
                                  prior_step=GRID.step, levels=(0.8, 0.9), score=score)
    a, c = layer.intercept, layer.slope

    def one(k, p):
        return k - p if score == "residual" else p - (a + c * k)

    queries = np.array([2.6, 3.4, 3.9, 4.2, 4.6, 5.1, 5.8, np.nan])
    sets, cols = layer.sets(queries), layer.intervals(queries)
    assert set(sets) == {set_column(0.8), set_column(0.9)} == set(layer.set_column_names)
    split = opened = 0
    for level in (0.8, 0.9):
        column = sets[set_column(level)]
        # on the edges themselves, membership in the set as written is the acceptance by the edge's own bin
        for q in queries[:-1]:
            cand, accepted = _naive_accepted(y, yhat, np.array(edges), level, q, 2.5, 6.5, step=0.5, score=one)
            np.testing.assert_array_equal(layer.in_set(cand, np.full(cand.size, q))[level], accepted)
        assert column[-1] is None
        lo, hi = interval_columns(level)
        for i, q in enumerate(queries[:-1]):
            pieces = column[i]
            assert pieces[0]["lo"] == cols[lo][i] and pieces[-1]["hi"] == cols[hi][i]  # the hull
            assert all(p["lo"] <= p["hi"] for p in pieces)
            assert all(p["hi"] < n["lo"] for p, n in zip(pieces[:-1], pieces[1:], strict=True))  # sorted, disjoint
            cand, accepted = _naive_accepted(y, yhat, np.array(edges), level, q, GRID.lo, GRID.hi, score=one)
            inside = np.zeros(cand.size, dtype=bool)
            interior = np.zeros(cand.size, dtype=bool)
            for p in pieces:
                inside |= (cand >= p["lo"] - 1e-5) & (cand <= p["hi"] + 1e-5)
                interior |= (cand > p["lo"] + 1e-5) & (cand < p["hi"] - 1e-5)
                if p["hi_open"]:  # cut at a range's edge: that K is the next range's, which rejects it
                    assert round(p["hi"], 6) in edges and not accepted[np.isclose(cand, p["hi"])].any()
                    opened += 1
            assert not (accepted & ~inside).any()  # every accepted K is in a piece
            assert accepted[interior].all()  # and every K inside a piece is accepted
            for p, n in zip(pieces[:-1], pieces[1:], strict=True):  # each gap holds rejected K
                assert (~accepted[(cand > p["hi"] + 1e-5) & (cand < n["lo"] - 1e-5)]).any()
            split += len(pieces) > 1
    assert split and opened  # the weak model does split some sets, and cut some at an edge


def test_stricter_level_pools_bins_the_90_percent_level_keeps():
    """Bins are merged for the 90 % level (19 points); the 95 % level pools neighbours for its own quantiles
    (39), recorded as such: each level's intervals equal the brute force over its own categories."""
    rng = np.random.default_rng(4)
    y = np.concatenate([rng.uniform(2.5, 3.4, 300).round(1), rng.uniform(3.6, 5.4, 400).round(1),
                        np.full(25, 5.7), np.full(25, 6.4)])
    yhat = 4.2 + 0.5 * (y - 4.2) + rng.normal(0, 0.3, y.size)
    layer = fit_label_conditional(y, yhat, edges=[3.5, 5.5, 6.0], prior_counts=GRID.counts(y), prior_lo=GRID.lo,
                                  prior_step=GRID.step, levels=(0.9, 0.95))
    assert layer.min_points == 19 and [b.n for b in layer.bins] == [300, 400, 25, 25]
    assert layer.merged == ["5.5 to < 6.0 (n=25) pooled at 95 % with >= 6.0 (n=25): fewer than 39 validation ECGs"]
    assert layer.bins[2].q_lo[1] == layer.bins[3].q_lo[1] and layer.bins[2].q_lo[0] != layer.bins[3].q_lo[0]
    cols = layer.intervals(np.array([3.9, 4.6, 5.0]))
    for level, edges in ((0.9, [3.5, 5.5, 6.0]), (0.95, [3.5, 5.5])):
        lo, hi = interval_columns(level)
        for i, q in enumerate([3.9, 4.6, 5.0]):
            naive = _naive_interval(y, yhat, np.array(edges), level, q, GRID.lo, GRID.hi)
            assert naive is not None
            np.testing.assert_allclose([cols[lo][i], cols[hi][i]], naive, atol=1.1e-3)
