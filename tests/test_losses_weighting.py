"""LDS kernel windows and weights, INV weights, bin lookup: hand-computed on tiny inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ecgka.errors import ConfigError, InputError
from ecgka.labels import LabelGrid
from ecgka.losses import inverse_frequency_weights, lds_kernel_window, lds_weights


def gaussian_filter_of_delta(ks, sigma):
    """scipy gaussian_filter1d of a centred delta, by hand: kernel radius 4 sigma, mode 'reflect'."""
    radius = int(4 * sigma + 0.5)
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    delta = np.zeros(ks)
    delta[(ks - 1) // 2] = 1.0

    def at(i):  # 'reflect' (d c b a | a b c d | d c b a)
        period = 2 * ks
        i %= period
        return delta[i] if i < ks else delta[period - 1 - i]

    return np.array([sum(taps[k + radius] * at(j - k) for k in range(-radius, radius + 1)) for j in range(ks)])


def test_gaussian_window_is_the_released_one():
    np.testing.assert_allclose(lds_kernel_window("gaussian", 5, 2), [0.858285, 0.945828, 1, 0.945828, 0.858285],
                               atol=1e-6)
    for ks, sigma in [(3, 1), (7, 1.5), (9, 3)]:
        by_hand = gaussian_filter_of_delta(ks, sigma)
        np.testing.assert_allclose(lds_kernel_window("gaussian", ks, sigma), by_hand / by_hand.max(), rtol=1e-12)


def test_triang_and_laplace_windows():
    np.testing.assert_allclose(lds_kernel_window("triang", 5, 2), [1 / 3, 2 / 3, 1, 2 / 3, 1 / 3])
    e = math.exp
    np.testing.assert_allclose(lds_kernel_window("laplace", 5, 2), [e(-1), e(-0.5), 1, e(-0.5), e(-1)])
    with pytest.raises(ConfigError, match="odd"):
        lds_kernel_window("gaussian", 4, 2)
    with pytest.raises(ConfigError, match="LDS kernel"):
        lds_kernel_window("box", 5, 2)


def scaled(per_sample):
    per_sample = np.asarray(per_sample, dtype=float)
    return per_sample * len(per_sample) / per_sample.sum()


def test_lds_weights_without_smoothing():
    bins = np.array([0, 0, 0, 0, 1, 2, 2])  # counts (4, 1, 2)
    expected = scaled([1 / 2] * 4 + [1.0] + [1 / math.sqrt(2)] * 2)
    np.testing.assert_allclose(lds_weights(bins, 3, "sqrt_inv", lds=False), expected)
    np.testing.assert_allclose(lds_weights(bins, 3, "inverse", lds=False), np.ones(7))  # all clipped up to 5
    np.testing.assert_allclose(lds_weights(bins, 3, "none", lds=False), np.ones(7))


def test_lds_weights_with_triangular_smoothing_zero_padded():
    bins = np.array([0, 0, 0, 0, 1, 2, 2])
    # sqrt counts (2, 1, sqrt 2), window (0.5, 1, 0.5), zero padding:
    s = [2 + 0.5, 0.5 * 2 + 1 + 0.5 * math.sqrt(2), 0.5 + math.sqrt(2)]
    expected = scaled([1 / s[0]] * 4 + [1 / s[1]] + [1 / s[2]] * 2)
    np.testing.assert_allclose(lds_weights(bins, 3, "sqrt_inv", kernel="triang", ks=3), expected)


def test_lds_inverse_truncates_the_smoothed_integer_table_like_the_released_code():
    bins = np.repeat([0, 1, 2], [10, 3, 7])  # clipped counts (10, 5, 7), window (0.5, 1, 0.5)
    exact = [10 + 2.5, 5 + 5 + 3.5, 7 + 2.5]  # 12.5, 13.5, 9.5 -> truncated 12, 13, 9
    truncated = lds_weights(bins, 3, "inverse", kernel="triang", ks=3)
    np.testing.assert_allclose(truncated, scaled(np.repeat([1 / 12, 1 / 13, 1 / 9], [10, 3, 7])))
    exact_w = lds_weights(bins, 3, "inverse", kernel="triang", ks=3, truncate_inverse=False)
    np.testing.assert_allclose(exact_w, scaled(np.repeat([1 / v for v in exact], [10, 3, 7])))
    assert np.isclose(truncated.mean(), 1.0)


def test_inverse_frequency_weights_by_hand():
    bins = np.array([0, 0, 1])
    np.testing.assert_allclose(inverse_frequency_weights(bins, 3, clip=(1, 1000)), [0.75, 0.75, 1.5])
    np.testing.assert_allclose(inverse_frequency_weights(bins, 3), [1, 1, 1])  # both counts clipped to 5
    bins = np.repeat([0, 1], [2000, 10])  # clipped (1000, 10)
    w = inverse_frequency_weights(bins, 2)
    assert math.isclose(w.mean(), 1.0) and math.isclose(w[-1] / w[0], 100.0)


def test_bad_bins_fail_clearly():
    with pytest.raises(InputError, match="integers"):
        lds_weights(np.array([0.5, 1.0]), 3)
    with pytest.raises(InputError, match=r"\[0, 2\]"):
        inverse_frequency_weights(np.array([0, 3]), 3)
    with pytest.raises(ConfigError, match="reweight"):
        lds_weights(np.array([0, 1]), 3, "none", lds=True)


def test_table_lookup_uses_grid_bins_and_clamps():
    table = torch.arange(86, dtype=torch.float32)
    labels = torch.tensor([1.5, 1.8, 4.0, 4.04, 4.06, 10.0, 0.2, 12.0], dtype=torch.float32)
    assert table[LabelGrid(1.5, 10.0, 0.1).clipped_index_torch(labels)].tolist() == [0, 3, 25, 25, 26, 85, 0, 85]
