"""Recording nuisance at the nine electrodes (RA, LA, LL, V1-V6): baseline wander, 60 Hz mains, muscle noise.

Noise is generated per electrode and turned into lead noise the way the leads are wired (I = LA - RA,
II = LL - RA, Vk = Vk - Wilson terminal), so III/aVR/aVF/aVL (derived afterwards from I and II) get the
real relative noise levels and the limb-lead identities still hold exactly. ``dropouts`` marks a
stretch of invalid samples in ~1 % of records, as a real reader meets them.
"""

from __future__ import annotations

import numpy as np

from ecgka.standin.wfdb_writer import FS, N_SAMPLES

_T = np.arange(N_SAMPLES) / FS
_STEP = 10  # samples per point of the coarse (50 Hz) grid used for slow components
_T_COARSE = np.arange(N_SAMPLES // _STEP + 1) * _STEP / FS
WANDER_MEDIAN_MV = 0.05
LIMB_NOISE = 1.1  # limb electrodes (RA, LA, LL) move more than the chest electrodes


def _upsample(coarse: np.ndarray) -> np.ndarray:
    """Linear interpolation of [n, 501] values on a 50 Hz grid to [n, 5000] samples (wander is slow)."""
    frac = np.arange(_STEP) / _STEP
    fine = coarse[:, :-1, None] * (1 - frac) + coarse[:, 1:, None] * frac
    return fine.reshape(coarse.shape[0], N_SAMPLES)


def baseline_wander(rng: np.random.Generator, n_leads: int) -> np.ndarray:
    """Slow drift (respiration, electrode motion): a few sinusoids of 0.05-0.6 Hz per electrode plus a
    shared respiratory one; heavy-tailed in amplitude because raw MIMIC records are not high-pass filtered."""
    f = rng.uniform(0.05, 0.6, (n_leads, 3))
    ph = rng.uniform(0, 2 * np.pi, (n_leads, 3))
    amp = rng.lognormal(np.log(WANDER_MEDIAN_MV), 0.8) * rng.uniform(0.3, 1.0, (n_leads, 3))
    own = (amp[:, :, None] * np.sin(2 * np.pi * f[:, :, None] * _T_COARSE + ph[:, :, None])).sum(1)
    resp = rng.uniform(0.005, 0.03) * np.sin(2 * np.pi * rng.uniform(0.15, 0.35) * _T_COARSE + rng.uniform(0, 6.3))
    return _upsample(own + resp[None, :] * rng.uniform(-1, 1, (n_leads, 1)))


def mains(rng: np.random.Generator, n_leads: int) -> np.ndarray:
    """60 Hz interference in about a quarter of the records, common phase, lead-specific amplitude."""
    if rng.random() > 0.25:
        return np.zeros((n_leads, N_SAMPLES))
    amp = rng.uniform(0.003, 0.03) * rng.uniform(0.3, 1.0, (n_leads, 1))
    return amp * np.sin(2 * np.pi * 60.0 * _T + rng.uniform(0, 2 * np.pi))[None, :]


def muscle(rng: np.random.Generator, n_leads: int) -> np.ndarray:
    """Broadband EMG-like noise (smoothed white noise), bursty in some records."""
    sd = rng.lognormal(np.log(0.006), 0.6)
    white = rng.standard_normal((n_leads, N_SAMPLES + 2), dtype=np.float32) * sd
    emg = (white[:, :-2] + white[:, 1:-1] + white[:, 2:]) / np.sqrt(3)
    if rng.random() < 0.15:  # a burst of movement
        centre, width = rng.uniform(0, 10), rng.uniform(0.5, 2.0)
        emg *= 1 + 4 * np.exp(-0.5 * ((_T - centre) / width) ** 2)[None, :]
    return emg


def electrodes_to_leads(e: np.ndarray) -> np.ndarray:
    """[9, T] electrode potentials (RA, LA, LL, V1..V6) -> [8, T] leads I, II, V1..V6."""
    wilson = e[:3].mean(0)
    return np.concatenate([(e[1] - e[0])[None], (e[2] - e[0])[None], e[3:] - wilson[None]])


def add_noise(leads: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Add electrode-level nuisance to [8, T] leads I, II, V1..V6."""
    e = baseline_wander(rng, 9) + mains(rng, 9) + muscle(rng, 9)
    e[:3] *= LIMB_NOISE
    return leads + electrodes_to_leads(e)


DROPOUT_RATE = 0.01  # records with a stretch of invalid samples (lead off, cart recovery)


def dropouts(digital: np.ndarray, rng: np.random.Generator, invalid: int) -> np.ndarray:
    """In ~1 % of records, mark a stretch of some leads as invalid (WFDB reads it back as NaN)."""
    if rng.random() >= DROPOUT_RATE:
        return digital
    out = digital.copy()
    leads = rng.choice(out.shape[1], size=int(rng.integers(1, out.shape[1] + 1)), replace=False)
    start = int(rng.integers(0, N_SAMPLES - 1))
    stop = min(N_SAMPLES, start + int(rng.integers(50, N_SAMPLES)))
    out[start:stop, leads] = invalid
    return out
