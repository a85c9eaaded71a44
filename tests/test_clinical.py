"""Clinical metrics against sklearn, threshold boundaries, operating points and the subject bootstrap."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix, roc_auc_score

from ecgka.labels import LabelGrid
from ecgka.metrics import (
    CONDITIONS,
    WeightedAuroc,
    auroc,
    binary_stats,
    bland_altman,
    bootstrap_ci,
    calibration_by_bin,
    clinical_metrics,
    cluster_bootstrap_indices,
    mae_by_range,
    operating_point,
    threshold_for_sensitivity,
)

RNG = np.random.default_rng(3)


def _case(name):
    if name == "ties":
        truth = RNG.integers(0, 2, 200).astype(bool)
        return truth, np.round(truth + RNG.normal(0, 1, 200), 0)  # heavy ties
    if name == "separable":
        return np.array([0, 0, 1, 1], bool), np.array([0.1, 0.2, 0.8, 0.9])
    if name == "inverted":
        return np.array([1, 1, 0, 0], bool), np.array([0.1, 0.2, 0.8, 0.9])
    truth = RNG.random(500) < 0.1
    return truth, truth * 0.7 + RNG.normal(0, 1, 500)


@pytest.mark.parametrize("case", ["ties", "separable", "inverted", "rare"])
def test_auroc_matches_sklearn(case):
    truth, score = _case(case)
    assert auroc(score, truth) == pytest.approx(roc_auc_score(truth, score), abs=1e-12)


@pytest.mark.parametrize("case", ["ties", "rare"])
def test_weighted_auroc_of_a_replicate_equals_auroc_of_its_rows(case):
    truth, score = _case(case)
    fast = WeightedAuroc(score, truth)
    for idx in cluster_bootstrap_indices(np.arange(truth.size) // 3, n_boot=20, seed=4):
        expected = roc_auc_score(truth[idx], score[idx]) if 0 < truth[idx].sum() < idx.size else None
        assert fast(idx) == pytest.approx(expected, abs=1e-12)


def test_auroc_undefined_with_one_class():
    assert auroc([0.1, 0.2], [True, True]) is None


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_binary_stats_match_confusion_matrix(seed):
    rng = np.random.default_rng(seed)
    truth, pred = rng.random(300) < 0.3, rng.random(300) < 0.4
    tn, fp, fn, tp = confusion_matrix(truth, pred).ravel()
    s = binary_stats(pred, truth)
    assert (s["tp"], s["fp"], s["tn"], s["fn"]) == (tp, fp, tn, fn)
    assert s["sensitivity"] == pytest.approx(tp / (tp + fn)) and s["specificity"] == pytest.approx(tn / (tn + fp))
    assert s["ppv"] == pytest.approx(tp / (tp + fp)) and s["npv"] == pytest.approx(tn / (tn + fn))
    assert binary_stats([False, False], [False, False])["sensitivity"] is None


@pytest.mark.parametrize("name, inside, outside", [
    ("hypo", [3.4, 3.4999], [3.5, np.float32(3.5), 4.0]),
    ("hyper", [5.5, np.float32(5.5), 7.0], [5.4, 5.4999]),
    ("severe_hypo", [2.4, 1.8], [2.5, np.float32(2.5)]),
    ("severe_hyper", [6.6, 6.5001], [6.5, np.float32(6.5)]),
])
def test_condition_thresholds(name, inside, outside):
    c = CONDITIONS[name]
    assert c.positive(np.array(inside, dtype=np.float64)).all()
    assert not c.positive(np.array(outside, dtype=np.float64)).any()


def test_operating_point_reaches_target_sensitivity_on_val():
    c = CONDITIONS["hyper"]
    val_labels = np.r_[np.full(10, 6.0), np.full(20, 4.0)]
    val_preds = np.r_[np.linspace(4.5, 5.4, 10), RNG.normal(4.2, 0.3, 20)]
    op = operating_point(val_preds, val_labels, val_preds, val_labels, c, target=0.9)
    assert op["threshold"] == pytest.approx(np.sort(val_preds[:10])[1])  # 9 of 10 positives at or above
    assert op["val"]["sensitivity"] == pytest.approx(0.9)
    mirrored = (9.0 - val_preds, 9.0 - val_labels)  # hyperkalaemic 6.0 -> hypokalaemic 3.0
    low = operating_point(*mirrored, *mirrored, CONDITIONS["hypo"], target=0.9)
    assert low["threshold"] == pytest.approx(9.0 - op["threshold"]) and low["rule"].startswith("predicted K <=")
    assert low["val"] == op["val"]
    assert threshold_for_sensitivity([1.0, 2.0], [False, False], 0.9) is None


def test_cluster_bootstrap_resamples_whole_subjects():
    subjects = np.repeat([11, 22, 33, 44, 55], [1, 2, 3, 4, 5])
    sizes = {s: int(np.sum(subjects == s)) for s in np.unique(subjects)}
    drawn_partial = False
    for idx in cluster_bootstrap_indices(subjects, n_boot=200, seed=1):
        picked = subjects[idx]
        for s, n in sizes.items():
            k = int(np.sum(picked == s))
            assert k % n == 0  # a subject comes with all of its samples, or not at all
            drawn_partial |= 0 < k < n
        assert len(np.unique(idx[picked == 55])) in (0, 5)
    assert not drawn_partial
    # same seed, same replicates
    a = list(cluster_bootstrap_indices(subjects, 3, seed=5))
    b = list(cluster_bootstrap_indices(subjects, 3, seed=5))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_subject_bootstrap_interval_is_wider_than_sample_bootstrap_for_clustered_data():
    # 40 subjects x 10 identical ECGs: the information is in 40 subjects, not 400 ECGs
    subject = np.repeat(np.arange(40), 10)
    value = np.repeat(RNG.normal(0, 1, 40), 10)
    by_subject = bootstrap_ci(lambda i: float(np.mean(value[i])), subject, n_boot=300, seed=0)
    by_sample = bootstrap_ci(lambda i: float(np.mean(value[i])), np.arange(400), n_boot=300, seed=0)
    width = lambda ci: ci["upper"] - ci["lower"]  # noqa: E731
    assert width(by_subject) > 2 * width(by_sample)
    assert by_subject["unit"] == "subject" and by_subject["n_valid"] == 300


def test_bland_altman_and_ranges_and_calibration():
    labels = np.array([2.0, 3.0, 3.5, 5.5, 6.5, 7.0, 4.0])
    preds = np.array([2.5, 3.2, 3.4, 5.0, 6.0, 6.0, 4.1])
    ba = bland_altman(preds, labels)
    diff = preds - labels
    assert ba["bias"] == pytest.approx(diff.mean()) and ba["sd"] == pytest.approx(diff.std(ddof=1))
    assert ba["loa_upper"] - ba["loa_lower"] == pytest.approx(2 * 1.96 * diff.std(ddof=1))
    rows = {r["range"]: r for r in mae_by_range(preds, labels)}
    assert [r["n"] for r in rows.values()] == [1, 1, 2, 2, 1]  # 6.5 counts as hyper, not severe
    assert rows["5.5 to 6.5"]["mae"] == pytest.approx(0.5) and rows["> 6.5"]["bias"] == pytest.approx(-1.0)
    cal = calibration_by_bin(preds, labels, LabelGrid.preset("potassium"), width=0.5)
    assert sum(r["n"] for r in cal) == labels.size
    first = cal[0]
    assert (first["bin_lower"], first["n"], first["mean_observed"]) == (2.5, 1, 2.0)
    edges = calibration_by_bin(np.array([3.3, 3.35, 3.29], np.float32), np.zeros(3), width=0.1)
    assert [(r["bin_lower"], r["n"]) for r in edges] == [(3.2, 1), (3.3, 2)]  # float32 3.3 opens its cell


def test_clinical_metrics_structure_and_ci_contains_estimate():
    n = 300
    labels = np.round(RNG.uniform(2.0, 7.5, n), 1)
    preds = labels + RNG.normal(0, 0.5, n)
    subjects = RNG.integers(0, 80, n)
    out = clinical_metrics(preds, labels, subjects, preds, labels, n_boot=100, seed=0)
    for name, c in out["conditions"].items():
        truth = CONDITIONS[name].positive(labels)
        assert c["n_positive"] == int(truth.sum())
        assert c["auroc"] == pytest.approx(roc_auc_score(truth, CONDITIONS[name].score(preds)))
        assert c["auroc_ci"]["lower"] <= c["auroc"] + 0.02 and c["auroc_ci"]["upper"] >= c["auroc"] - 0.02
        assert c["operating_point"]["val"]["sensitivity"] >= 0.9
