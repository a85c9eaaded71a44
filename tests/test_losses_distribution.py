"""Dist Loss pseudo-labels: worked examples, the released rounding rule, properties of every rounding."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import wasserstein_distance

from ecgka.errors import ConfigError, InputError
from ecgka.labels import LabelGrid
from ecgka.losses import RoundingRepairWarning, batch_counts, label_pmf, pseudo_labels

ROUNDINGS = ["official", "paper", "quantile"]


def released_rule_literal(pmf, batch_size):
    """Independent, loop-by-loop transcription of the released rule (facts sheet, steps 1-3)."""
    n = [float(p) * batch_size for p in pmf]
    length = len(n)
    forward, backward, acc = [], [0.0] * length, 0.0
    for value in n:
        acc += value
        forward.append(acc)
    acc = 0.0
    for i in reversed(range(length)):  # the reverse cumulative sum, accumulated from the last bin
        acc += n[i]
        backward[i] = acc
    fi = next((i for i in range(length) if forward[i] >= 1), 0)
    bi = next((i for i in reversed(range(length)) if backward[i] >= 1), length - 1)
    counts = [0] * length
    for i in range(fi + 1, bi):
        counts[i] = round(n[i])  # Python round: half to even
    counts[fi] = round(forward[fi])
    counts[bi] = round(backward[bi])
    res = batch_size - sum(counts)
    m = counts.index(max(counts))
    if abs(res) <= math.floor(0.5 * length):
        for k in range(m - abs(res) // 2, m - abs(res) // 2 + abs(res)):
            if 0 <= k < length:
                counts[k] += (res > 0) - (res < 0)
    return counts


def w1(grid, pmf, values):
    return wasserstein_distance(grid, values, u_weights=pmf)


@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_paper_worked_example(rounding):
    # Labels (4, 5, 6) with counts (1, 2, 3) give (4, 5, 5, 6, 6, 6).
    grid, pmf = np.array([4.0, 5.0, 6.0]), np.array([1, 2, 3]) / 6
    assert batch_counts(pmf, 6, rounding).tolist() == [1, 2, 3]
    assert pseudo_labels(grid, pmf, 6, rounding).tolist() == [4, 5, 5, 6, 6, 6]


def test_figure_2_example():
    # Labels [1, 3, 4, 6], expected frequencies [1, 2, 3, 1] -> [1, 3, 3, 4, 4, 4, 6].
    grid, pmf = np.array([1.0, 3.0, 4.0, 6.0]), np.array([1, 2, 3, 1]) / 7
    for rounding in ROUNDINGS:
        assert pseudo_labels(grid, pmf, 7, rounding).tolist() == [1, 3, 3, 4, 4, 4, 6]


def test_paper_eq1_remainder_goes_to_first_and_last_bins():
    # n = (0.5, 2.5, 3.5, 3.5): floors (0, 2, 3, 3), a = 2 -> +1 to the first bin and the last bin.
    assert batch_counts(np.array([1, 5, 7, 7]) / 20, 10, "paper").tolist() == [1, 2, 3, 4]
    # n = (0.5, 2.5, 3, 4): a = 1 -> only the first bin.
    assert batch_counts(np.array([1, 5, 6, 8]) / 20, 10, "paper").tolist() == [1, 2, 3, 4]


def test_official_lost_residual_is_repaired_with_warning():
    # n = (2.5, .5, .5, .5, 1): lumped tails 2 and 1, interior 0 -> residual 2 at mode 0; the released
    # window [-1, 0] loses one unit (sum 4). Repaired: the window moves inside the grid -> bins 0 and 1.
    pmf = np.array([5, 1, 1, 1, 2]) / 10
    assert released_rule_literal(pmf, 5) == [3, 0, 0, 0, 1]
    assert batch_counts(pmf, 5, "released").tolist() == [3, 0, 0, 0, 1]
    with pytest.warns(RoundingRepairWarning):
        assert batch_counts(pmf, 5, "official").tolist() == [3, 1, 0, 0, 1]
    values = pseudo_labels(np.arange(5.0), pmf, 5, "released")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RoundingRepairWarning)
        assert pseudo_labels(np.arange(5.0), pmf, 5).tolist() == [0, 0, 0, 1, 4]
    assert values.tolist() == [0, 0, 0, 4, 0]  # released: the lost slot stays 0.0


def test_official_negative_count_is_repaired():
    # n = (.4, .6 x 9, .2), B = 6: fi = 1 (lumps 1.0), bi = 8 (lumps 1.4), interior ones -> 8 counts,
    # residual -2 on the window [0, 1] at mode 1 -> count -1 in bin 0. Repaired: take from bins 1 and 2.
    pmf = np.array([0.4] + [0.6] * 9 + [0.2]) / 6
    assert released_rule_literal(pmf, 6) == [-1, 0, 1, 1, 1, 1, 1, 1, 1, 0, 0]
    with pytest.warns(RoundingRepairWarning):
        assert batch_counts(pmf, 6).tolist() == [0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=60), st.integers(1, 1024))
def test_official_equals_released_rule_whenever_that_is_valid(weights, batch_size):
    pmf = np.asarray(weights) + 1e-3
    pmf = pmf / pmf.sum()
    literal = released_rule_literal(pmf, batch_size)
    assert batch_counts(pmf, batch_size, "released").tolist() == literal
    if sum(literal) == batch_size and min(literal) >= 0:
        assert batch_counts(pmf, batch_size, "official").tolist() == literal


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=130), st.integers(1, 1024),
       st.sampled_from(ROUNDINGS))
def test_counts_sum_to_batch_and_are_non_negative(weights, batch_size, rounding):
    pmf = np.asarray(weights)
    if pmf.sum() <= 0:
        pmf = pmf + 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RoundingRepairWarning)
        counts = batch_counts(pmf, batch_size, rounding)
    assert counts.sum() == batch_size
    assert counts.min() >= 0


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0.001, 1), min_size=2, max_size=90), st.integers(1, 1024),
       st.sampled_from(ROUNDINGS), st.sampled_from([(1.5, 0.1), (0.0, 1.0), (3.0, 0.05)]))
def test_pseudo_labels_are_sorted_and_on_the_grid(weights, batch_size, rounding, grid_spec):
    lo, step = grid_spec
    grid = LabelGrid(lo, lo + step * (len(weights) - 1), step).centres
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RoundingRepairWarning)
        values = pseudo_labels(grid, np.asarray(weights), batch_size, rounding)
    assert len(values) == batch_size
    assert np.all(np.diff(values) >= 0)
    assert np.isin(values, grid).all()


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0.001, 1), min_size=2, max_size=90), st.integers(1, 1024))
def test_quantile_rounding_minimises_w1_among_the_three(weights, batch_size):
    grid = LabelGrid(0.0, float(len(weights) - 1), 1.0).centres
    pmf = np.asarray(weights) / np.sum(weights)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RoundingRepairWarning)
        distances = {r: w1(grid, pmf, pseudo_labels(grid, pmf, batch_size, r)) for r in ROUNDINGS}
    assert distances["quantile"] <= min(distances.values()) + 1e-9


def test_agedb_b8_defect_example(shared_dir):
    import pandas as pd

    table = pd.read_csv(shared_dir / "data" / "agedb-dir" / "agedb.csv")
    ages = table.loc[table["split"] == "train", "age"].to_numpy()
    grid, pmf = label_pmf(ages, (0, 120, 1))
    assert grid[np.argmax(pmf)] == 38
    assert pseudo_labels(grid, pmf, 8, "official").tolist() == [22, 23, 24, 25, 25, 26, 27, 67]
    assert released_rule_literal(pmf, 8) == batch_counts(pmf, 8, "official").tolist()
    quantile = pseudo_labels(grid, pmf, 8, "quantile")
    assert w1(grid, pmf, quantile) < w1(grid, pmf, pseudo_labels(grid, pmf, 8, "official"))
    for batch_size in (256, 512):  # the released rule behaves well at the paper's batch sizes
        assert released_rule_literal(pmf, batch_size) == batch_counts(pmf, batch_size).tolist()


def test_label_pmf_is_scipy_kde_on_the_grid():
    rng = np.random.default_rng(0)
    labels = np.round(rng.normal(4.2, 0.6, 400), 1)
    labels = np.concatenate([labels, [0.5, 12.0]])  # outside the range: dropped first
    grid, pmf = label_pmf(labels, (1.5, 10.0, 0.1), bw_method=0.5)
    inside = labels[(labels >= 1.5) & (labels <= 10.0)]
    h = 0.5 * inside.std(ddof=1)
    density = np.exp(-0.5 * ((grid[:, None] - inside[None, :]) / h) ** 2).sum(1)
    np.testing.assert_allclose(pmf, density / density.sum(), rtol=1e-10, atol=1e-15)
    assert len(grid) == 86 and grid[0] == 1.5 and grid[-1] == 10.0
    assert math.isclose(pmf.sum(), 1.0)


def test_grid_is_exact_and_bins_are_by_index():
    grid = LabelGrid(1.5, 10.0, 0.1)
    assert grid.centres[3] == 1.8 and grid.centres[25] == 4.0 and grid.centres[-1] == 10.0  # no += drift
    assert grid.bin_index(grid.centres).tolist() == list(range(86))
    assert grid.bin_index(np.array([4.0, 4.04, 4.06])).tolist() == [25, 25, 26]


def test_bad_inputs_fail_clearly():
    with pytest.raises(ConfigError, match="rounding"):
        batch_counts(np.ones(3), 4, "rint")
    with pytest.raises(ConfigError, match="batch size"):
        batch_counts(np.ones(3), 0)
    with pytest.raises(InputError, match="pmf"):
        batch_counts(np.array([0.5, -0.1]), 4)
    with pytest.raises(InputError, match="two distinct labels"):
        label_pmf(np.array([4.0, 4.0]), (1.5, 10.0, 0.1))
