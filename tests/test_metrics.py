"""Regression errors and few-shot groups against sklearn / scipy / numpy references."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import gmean
from sklearn.metrics import mean_absolute_error, mean_squared_error

from ecgka.labels import LabelGrid, ShotRule
from ecgka.metrics import (
    balanced_gm,
    balanced_mae,
    balanced_mse,
    gm,
    mae,
    mse,
    shot_metrics,
    shot_metrics_from_counts,
)

RNG = np.random.default_rng(7)
CASES = {
    "random": (RNG.normal(4, 1, 50), RNG.normal(4, 1, 50)),
    "single": (np.array([5.0]), np.array([4.2])),
    "negative_errors": (np.array([1.0, 2.0, 3.0]), np.array([2.0, 4.0, 8.0])),
    "float32": (RNG.normal(4, 1, 20).astype(np.float32), RNG.normal(4, 1, 20).astype(np.float32)),
    "ages": (RNG.uniform(0, 100, 30), RNG.integers(0, 100, 30).astype(float)),
}


def _f64(a):
    return np.asarray(a, dtype=np.float64)  # ecgka computes in float64 whatever the input dtype


@pytest.mark.parametrize("ours, reference", [
    (mae, lambda p, y: mean_absolute_error(_f64(y), _f64(p))),
    (mse, lambda p, y: mean_squared_error(_f64(y), _f64(p))),
    (gm, lambda p, y: gmean(np.abs(_f64(p) - _f64(y)))),
])
@pytest.mark.parametrize("case", list(CASES))
def test_errors_match_references(ours, reference, case):
    preds, labels = CASES[case]
    assert ours(preds, labels) == pytest.approx(reference(preds, labels), rel=1e-12, abs=1e-12)


def test_gm_exact_zero_error_gives_zero_and_empty_gives_none():
    assert gm([4.0, 5.0, 6.0], [4.0, 5.5, 7.0]) == 0.0
    with np.errstate(divide="ignore"):
        assert gmean([0.0, 0.5, 1.0]) == 0.0  # scipy semantics that gm follows
    assert mae([], []) is None and mse([], []) is None and gm([], []) is None


@pytest.mark.parametrize("ours, per_label", [
    (balanced_mae, lambda e: np.mean(np.abs(e))),
    (balanced_mse, lambda e: np.mean(e**2)),
])
def test_balanced_variants_average_per_label(ours, per_label):
    labels = np.array([4.0, 4.0, 4.0, 4.0, 6.0, 2.5])
    preds = np.array([4.1, 3.9, 4.2, 4.0, 5.0, 3.0])
    df = pd.DataFrame({"y": labels, "e": preds - labels})
    expected = df.groupby("y")["e"].apply(lambda e: per_label(e.to_numpy())).mean()
    assert ours(preds, labels) == pytest.approx(expected, rel=1e-12)
    assert ours(preds, labels) != pytest.approx(per_label(preds - labels))  # differs from the plain mean


def test_balanced_gm_is_geometric_mean_of_per_label_gm():
    labels = np.array([4.0, 4.0, 6.0])
    preds = np.array([4.5, 4.2, 5.0])
    expected = gmean([gmean([0.5, 0.2]), 1.0])
    assert balanced_gm(preds, labels) == pytest.approx(expected, rel=1e-12)


def test_every_grid_value_is_its_own_bin_in_float32_and_float64():
    k = np.arange(15, 81) / 10.0  # exact decimal grid 1.5, 1.6, ..., 8.0
    drifted = 1.5 + np.cumsum(np.full(66, 0.1)) - 0.1  # accumulated float drift, as in the released code
    train = np.repeat(k, 10)
    reference = shot_metrics(k + 0.05, k, train)
    for values in (k.astype(np.float32), drifted, drifted.astype(np.float32)):
        out = shot_metrics(values.astype(np.float64) + 0.05, values, train.astype(values.dtype))
        assert out["all"]["n_labels"] == 66 and out["all"]["n"] == 66
        assert out["all"]["balanced_mae"] == pytest.approx(reference["all"]["balanced_mae"])
    # what a floor-based bin edge test gets wrong for some of these values
    assert (np.floor((k.astype(np.float32) - 1.5) / 0.1).astype(int) != np.arange(66)).any()


def _train_labels(counts: dict[float, int]) -> np.ndarray:
    return np.concatenate([np.full(n, k) for k, n in counts.items()])


def test_shot_metrics_absolute_groups_and_values():
    # the DIR age rule: many > 100, few < 20 training samples; 101 many, 100 and 20 median, 19 and 0 few
    train = _train_labels({30.0: 101, 40.0: 100, 50.0: 20, 60.0: 19})
    labels = np.array([30.0, 30.0, 40.0, 50.0, 60.0, 70.0])  # 70 has no training sample -> few
    preds = labels + np.array([1.0, -3.0, 2.0, 0.5, 4.0, -2.0])
    out = shot_metrics(preds, labels, train, LabelGrid.preset("age"))
    assert out["many"]["n"] == 2 and out["many"]["mae"] == pytest.approx(2.0)
    assert out["median"]["n"] == 2 and out["median"]["mae"] == pytest.approx(1.25)
    assert out["few"]["n"] == 2 and out["few"]["mae"] == pytest.approx(3.0)
    assert out["few"]["gm"] == pytest.approx(gmean([4.0, 2.0]))
    assert out["all"]["mse"] == pytest.approx(np.mean((preds - labels) ** 2))
    assert out["many"]["balanced_mae"] == pytest.approx(2.0) and out["all"]["n_labels"] == 5


def test_relative_rule_on_hand_built_histogram():
    # n_max = 200: many > 100, few < 30, median otherwise; an empty bin is few
    grid = LabelGrid(0.0, 7.0, 1.0)
    counts = np.array([0, 5, 29, 30, 100, 101, 200, 60])
    labels = np.arange(8.0)
    out = shot_metrics_from_counts(labels + 1.0, labels, counts, grid)
    assert (out["many"]["n"], out["median"]["n"], out["few"]["n"]) == (2, 3, 3)
    wider = shot_metrics_from_counts(labels + 1.0, labels, counts, grid.with_shots(ShotRule(many=0.4)))
    assert (wider["many"]["n"], wider["median"]["n"]) == (3, 2)  # 100 > 0.4 x 200: the grid's rule decides


def test_empty_group_is_reported_empty():
    train = _train_labels({4.0: 100, 4.1: 90, 4.5: 5})
    out = shot_metrics([4.0, 4.2], [4.0, 4.1], train)  # no median-shot or few-shot test label
    for group in ("median", "few"):
        assert out[group]["n"] == 0
        assert all(out[group][k] is None for k in ("mae", "mse", "gm", "balanced_mae", "balanced_gm"))
    assert out["many"]["n"] == 2 and out["many"]["gm"] == 0.0  # one exact zero error


def test_shot_metrics_from_manifest_counts_equals_from_labels():
    grid = LabelGrid.preset("potassium")
    train = np.round(RNG.normal(4.2, 0.6, 2000), 1).clip(1.5, 10)
    labels = np.round(RNG.uniform(2, 7, 300), 1)
    preds = labels + RNG.normal(0, 0.4, 300)
    a = shot_metrics(preds, labels, train)
    b = shot_metrics_from_counts(preds, labels, grid.counts(train), grid)
    c = shot_metrics(preds, labels.astype(np.float32), train.astype(np.float32), grid)
    assert a == b
    assert {g: c[g]["n"] for g in c} == {g: a[g]["n"] for g in a}  # float32 labels land in the same bins
    assert sum(a[g]["n"] for g in ("many", "median", "few")) == 300
