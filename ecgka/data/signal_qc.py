"""Lead selection by name, quality control with reason codes, resampling and cleaning of one record.

:func:`process_signal` checks one :class:`~ecgka.data.mimic_reader.Signal` and returns its selected
leads in mV or raises :class:`RecordError` with the reason: ``wrong_lead_count``, ``duplicate_lead``
(two signals with one name: which is the lead is unknown), ``lead_missing``, ``checksum_mismatch`` (a
selected lead's samples do not sum to its header checksum), ``wrong_fs``, ``wrong_length``, ``nan_samples``, ``flat_lead``, ``saturated_lead``. :func:`clean_batch`
then cleans a whole chunk at once (filters designed once), and :func:`to_stored` gives float16 mV.
"""

from __future__ import annotations

import functools

import numpy as np

from ecgka.data.config import SignalConfig
from ecgka.data.mimic_reader import RecordError, Signal


def _norm(name: str) -> str:
    return name.strip().replace(" ", "").lower()


def lead_index(names: list[str], wanted: list[str]) -> list[int]:
    """Positions of ``wanted`` leads in ``names``, matched by name (case and spaces ignored).

    Two signals with one name (``II`` twice, or ``II`` and ``ii``) are ``duplicate_lead``: the header is
    wrong about at least one of them, so no lead of the record can be trusted to be what it says."""
    norm: dict[str, int] = {}
    for i, n in enumerate(names):
        if norm.setdefault(_norm(n), i) != i:
            raise RecordError("duplicate_lead", f"two signals named {n!r} (signals {norm[_norm(n)] + 1} and {i + 1})")
    missing = [w for w in wanted if _norm(w) not in norm]
    if missing:
        raise RecordError("lead_missing", f"no lead {', '.join(missing)} among {', '.join(names)}")
    return [norm[_norm(w)] for w in wanted]


def check_checksums(sig: Signal, idx: list[int]) -> None:
    """``checksum_mismatch`` unless every selected signal's samples sum (mod 65536) to its header checksum
    (signals without a checksum in the header, and records the reader could not check, pass)."""
    if sig.checksums is None:
        return
    header, data = sig.checksums
    for i in idx:
        if header[i] >= 0 and header[i] != data[i]:
            raise RecordError("checksum_mismatch", f"lead {sig.sig_name[i]}: header checksum {int(header[i])}, "
                                                   f"samples sum to {int(data[i])} (mod 65536)")


def _to_mv(values: np.ndarray, units: list[str]) -> np.ndarray:
    scale = np.array([{"uv": 1e-3, "mv": 1.0, "v": 1e3}.get(u.strip().lower(), np.nan) for u in units])
    if np.isnan(scale).any():
        raise RecordError("unsupported_record", f"units {units} are not voltages")
    return values * scale[:, None]


def _resample(x: np.ndarray, fs_in: float, fs_out: int) -> np.ndarray:
    from fractions import Fraction

    from scipy.signal import resample_poly

    ratio = Fraction(fs_out / fs_in).limit_denominator(1000)
    return resample_poly(x, ratio.numerator, ratio.denominator, axis=1)


def check_quality(x: np.ndarray, names: list[str], cfg: SignalConfig) -> None:
    """Reject NaN, flat and saturated leads (``x``: [leads, samples] in mV)."""
    bad = np.isnan(x).any(axis=1)
    if bad.any():
        raise RecordError("nan_samples", f"invalid samples in lead {names[int(np.argmax(bad))]}")
    std = x.std(axis=1)
    if (std < cfg.flat_std_mv).any():
        i = int(np.argmin(std))
        raise RecordError("flat_lead", f"lead {names[i]} std {std[i]:.4f} mV")
    at_edge = ((x == x.max(axis=1, keepdims=True)) | (x == x.min(axis=1, keepdims=True))).mean(axis=1)
    if (at_edge > cfg.saturated_fraction).any():
        i = int(np.argmax(at_edge))
        raise RecordError("saturated_lead", f"lead {names[i]}: {at_edge[i]:.1%} of samples at its limits")


def _neurokit_batch(x: np.ndarray, fs: int, cfg: SignalConfig) -> np.ndarray:
    """``nk.ecg_clean(method="neurokit")`` on many rows at once: the same filters (0.5 Hz order-5
    Butterworth high-pass, zero-phase; then a one-mains-period moving average, zero-phase), designed once.
    ``tests/test_build_signal.py`` checks equality with ``nk.ecg_clean`` record by record."""
    from scipy.signal import filtfilt, sosfiltfilt

    y = sosfiltfilt(_highpass_sos(fs), x, axis=-1)
    b = np.ones(int(fs / cfg.powerline_hz)) if fs >= 100 else np.ones(2)
    if len(b) < 2:  # mains period under 2 samples (e.g. 60 Hz at 100 Hz): a 1-tap average is the identity
        return y  # (neurokit2 raises here; resampling's anti-alias filter has already removed the mains)
    return filtfilt(b, [len(b)], y, method="pad", axis=-1)


HIGHPASS_HZ = 0.5  # neurokit2's ecg_clean high-pass corner (recorded in the manifest and shard metadata)


@functools.lru_cache(maxsize=8)
def _highpass_sos(fs: int) -> np.ndarray:
    from scipy.signal import butter

    return butter(5, HIGHPASS_HZ, btype="highpass", output="sos", fs=fs)


def _neurokit_per_lead(x: np.ndarray, fs: int, cfg: SignalConfig) -> np.ndarray:
    import neurokit2 as nk

    return np.stack([nk.ecg_clean(row, sampling_rate=fs, method=cfg.clean_method, powerline=cfg.powerline_hz)
                     for row in x])


def clean_batch(x: np.ndarray, fs: int, cfg: SignalConfig) -> np.ndarray:
    """Clean ``x`` [..., samples] row by row (neurokit2 ``ecg_clean`` semantics, mains ``powerline_hz``)."""
    if not cfg.clean or x.size == 0:
        return x
    flat = x.reshape(-1, x.shape[-1])
    if cfg.clean_method.lower() in {"neurokit", "nk", "nk2", "neurokit2"}:
        out = _neurokit_batch(flat, fs, cfg)
    else:
        out = _neurokit_per_lead(flat, fs, cfg)
    return out.reshape(x.shape)


def process_signal(sig: Signal, cfg: SignalConfig) -> np.ndarray:
    """Select, check and resample; return float64 mV [leads, n_samples] at ``cfg.fs`` (not yet cleaned)."""
    n_sig = sig.p_signal.shape[1]
    if cfg.expected_n_leads is not None and n_sig != cfg.expected_n_leads:
        raise RecordError("wrong_lead_count", f"{n_sig} leads, expected {cfg.expected_n_leads}")
    idx = lead_index(sig.sig_name, cfg.leads)
    check_checksums(sig, idx)
    x = _to_mv(sig.p_signal[:, idx].T, [sig.units[i] for i in idx])
    if sig.fs != cfg.fs:
        if not cfg.resample:
            raise RecordError("wrong_fs", f"{sig.fs:g} Hz, expected {cfg.fs}")
        if np.isnan(x).any():
            raise RecordError("nan_samples", "invalid samples before resampling")
        x = _resample(x, sig.fs, cfg.fs)
    if x.shape[1] != cfg.n_samples:
        raise RecordError("wrong_length", f"{x.shape[1]} samples, expected {cfg.n_samples}")
    check_quality(x, cfg.leads, cfg)
    return x


def to_stored(x: np.ndarray) -> np.ndarray:
    """float16 mV, lead-major, flattened per record: [records, leads * samples]."""
    return np.ascontiguousarray(x, dtype=np.float16).reshape(x.shape[0], int(np.prod(x.shape[1:])))
