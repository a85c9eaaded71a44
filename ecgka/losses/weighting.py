"""Label-bin sample weights: the INV weights of Dist Loss and the LDS weights (Yang et al. 2021).

Bins are explicit integer indices (``LabelGrid.bin_index``), so continuous labels such as potassium in
0.1 mmol/L bins work; ages use the age grid (0..120, step 1). Weights are tables per bin, rescaled so that
their mean over the training samples is 1, and looked up per batch from the targets' bins.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import convolve1d, gaussian_filter1d
from scipy.signal.windows import triang

from ecgka.errors import ConfigError, InputError
from ecgka.losses.options import DistLossOptions, LDSParams
from ecgka.names import NameTable

_LDS, _DIST = LDSParams(), DistLossOptions()  # the defaults' one home
KERNELS: NameTable = NameTable("LDS kernel")
REWEIGHTS: NameTable = NameTable("reweight")


def _check_bins(bin_index, n_bins: int) -> np.ndarray:
    bins = np.asarray(bin_index)
    if bins.size == 0:
        raise InputError("no training labels to compute weights from")
    if not np.issubdtype(bins.dtype, np.integer):
        raise InputError(f"bin indices must be integers (use LabelGrid.bin_index), got {bins.dtype}")
    if bins.min() < 0 or bins.max() >= n_bins:
        raise InputError(f"bin indices must lie in [0, {n_bins - 1}], got [{bins.min()}, {bins.max()}]")
    return bins.astype(np.int64)


@KERNELS.register("gaussian")
def _gaussian(ks: int, sigma: float) -> np.ndarray:
    delta = np.zeros(ks)
    delta[(ks - 1) // 2] = 1.0
    return gaussian_filter1d(delta, sigma=sigma)  # scipy defaults: mode="reflect", truncate=4


@KERNELS.register("triang")
def _triang(ks: int, sigma: float) -> np.ndarray:
    return triang(ks)


@KERNELS.register("laplace")
def _laplace(ks: int, sigma: float) -> np.ndarray:
    x = np.arange(ks) - (ks - 1) // 2
    return np.exp(-np.abs(x) / sigma) / (2.0 * sigma)


def lds_kernel_window(kernel: str = _LDS.kernel, ks: int = _LDS.ks, sigma: float = _LDS.sigma) -> np.ndarray:
    """The LDS smoothing window, divided by its maximum (gaussian = gaussian_filter1d of a delta)."""
    if ks < 1 or ks % 2 == 0:
        raise ConfigError(f"LDS kernel size ks must be odd and >= 1, got {ks}")
    window = KERNELS.get(kernel)(ks, sigma)
    return window / window.max()


@REWEIGHTS.register("sqrt_inv")
def _sqrt_inv(counts: np.ndarray) -> np.ndarray:
    return np.sqrt(counts)


@REWEIGHTS.register("inverse")
def _inverse(counts: np.ndarray) -> np.ndarray:
    return np.clip(counts, 5, 1000)  # integers: LDS smoothing then truncates, as in the released code


def _scaled_table(per_bin: np.ndarray, bins: np.ndarray) -> np.ndarray:
    """1 / per_bin, rescaled so the mean weight over the training samples is 1."""
    table = np.zeros(len(per_bin))
    nonzero = per_bin > 0
    table[nonzero] = 1.0 / per_bin[nonzero]
    return table * (len(bins) / table[bins].sum())


def lds_table(bin_index, n_bins: int, reweight=_LDS.reweight, lds=_LDS.lds, kernel=_LDS.kernel, ks=_LDS.ks,
              sigma=_LDS.sigma, truncate_inverse=_LDS.truncate_inverse) -> np.ndarray:
    """Per-bin LDS weights (mean 1 over the training samples); see ``lds_weights``."""
    bins = _check_bins(bin_index, n_bins)
    if reweight == "none":
        if lds:
            raise ConfigError("LDS needs reweight 'sqrt_inv' or 'inverse', not 'none'")
        return np.ones(n_bins)
    counts = np.bincount(bins, minlength=n_bins)
    values = REWEIGHTS.get(reweight)(counts)
    if not truncate_inverse:
        values = values.astype(np.float64)
    if lds:
        values = convolve1d(values, weights=lds_kernel_window(kernel, ks, sigma), mode="constant")
    return _scaled_table(values.astype(np.float64), bins)


def lds_weights(bin_index, n_bins: int, reweight=_LDS.reweight, lds=_LDS.lds, kernel=_LDS.kernel, ks=_LDS.ks,
                sigma=_LDS.sigma, truncate_inverse=_LDS.truncate_inverse) -> np.ndarray:
    """Per-sample LDS weights, mean 1: 1 / (kernel-smoothed transformed bin counts), zero padding.

    ``reweight``: ``sqrt_inv`` (sqrt(count)), ``inverse`` (clip(count, 5, 1000); with
    ``truncate_inverse`` the smoothed integer table is truncated to integers as in the released code) or
    ``none`` (all ones, only with ``lds=False``).
    """
    table = lds_table(bin_index, n_bins, reweight, lds, kernel, ks, sigma, truncate_inverse)
    return table[np.asarray(bin_index, dtype=np.int64)]


def inverse_frequency_table(bin_index, n_bins: int, clip=_DIST.clip) -> np.ndarray:
    """Per-bin INV weights: 1 / clip(count, lo, hi), rescaled to mean 1 over the training samples."""
    bins = _check_bins(bin_index, n_bins)
    counts = np.clip(np.bincount(bins, minlength=n_bins), clip[0], clip[1]).astype(np.float64)
    return _scaled_table(counts, bins)


def inverse_frequency_weights(bin_index, n_bins: int, clip=_DIST.clip) -> np.ndarray:
    """Per-sample INV weights of Dist Loss (count-based, clipped, mean 1)."""
    return inverse_frequency_table(bin_index, n_bins, clip)[np.asarray(bin_index, dtype=np.int64)]

