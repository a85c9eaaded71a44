"""A 12-lead ECG from a cardiac dipole: each wave is a 3-D vector times a time course, projected on lead vectors.

Leads I, II and V1-V6 are projections of the heart vector (plus electrode noise); III, aVR, aVF and aVL
are then derived exactly as a cart does (Einthoven/Goldberger), so the limb-lead identities hold in
every record. Potassium changes the waves as in ``../shared/reference/mimic-iv.md``: hyperkalaemia gives
tall narrow peaked T, flat P, longer PR and wide QRS; hypokalaemia gives flat or inverted T, U waves,
ST depression and a longer QT. A per-subject sensitivity makes only some patients show clear signs.
"""

from __future__ import annotations

import numpy as np

from ecgka.standin.noise import add_noise
from ecgka.standin.wfdb_writer import FS, N_SAMPLES

# wave order of the dipole model
WAVES = ("P", "Q", "R", "S", "ST", "T", "U", "VQRS", "VT")
# heart-vector directions (x left, y inferior, z anterior) and amplitudes (mV) of a normal adult beat
_DIRS = np.array(
    [
        [0.45, 0.80, 0.15],  # P
        [-0.50, 0.20, 0.80],  # Q (septal, left to right and anterior)
        [0.55, 0.60, -0.30],  # R (main left ventricular depolarisation)
        [-0.25, -0.45, -0.70],  # S (terminal, basal and posterior)
        [0.60, 0.55, 0.35],  # ST (level shift along the T direction)
        [0.60, 0.55, 0.35],  # T
        [0.35, 0.35, 0.80],  # U (anterior: V2-V3)
        [-0.60, -0.30, 0.65],  # ventricular premature beat, QRS
        [0.60, 0.30, -0.65],  # its discordant T
    ]
)
_DIRS = _DIRS / np.linalg.norm(_DIRS, axis=1, keepdims=True)
_AMPS = np.array([0.11, 0.12, 1.15, 0.35, 1.0, 0.30, 0.03, 1.40, 0.45])

# lead vectors of I, II, V1..V6; precordial gains calibrated so per-lead SDs match MIMIC (see tests)
_PRECORDIAL_DEG = np.array([118.0, 96.0, 78.0, 58.0, 34.0, 8.0])
_PRECORDIAL_GAIN = np.array([1.48, 2.37, 2.54, 2.17, 1.61, 1.18])
_LIMB_GAIN = np.array([0.67, 0.67])


def lead_matrix() -> np.ndarray:
    """[8, 3] projection onto I, II, V1..V6."""
    limb = np.array([[1.0, 0.0, 0.0], [0.5, np.sqrt(3) / 2, 0.0]]) * _LIMB_GAIN[:, None]
    th = np.deg2rad(_PRECORDIAL_DEG)
    prec = np.stack([np.cos(th), np.full(th.size, 0.15), np.sin(th)], axis=1) * _PRECORDIAL_GAIN[:, None]
    return np.concatenate([limb, prec])


_LEAD_MATRIX = lead_matrix()


def derive_limb_leads(lead_i: np.ndarray, lead_ii: np.ndarray) -> dict[str, np.ndarray]:
    """III, aVR, aVF, aVL from I and II (Einthoven and Goldberger)."""
    return {
        "III": lead_ii - lead_i,
        "aVR": -(lead_i + lead_ii) / 2,
        "aVF": lead_ii - lead_i / 2,
        "aVL": lead_i - lead_ii / 2,
    }


def _rotation(frontal: float, horizontal: float, tilt: float) -> np.ndarray:
    cz, sz = np.cos(frontal), np.sin(frontal)
    cy, sy = np.cos(horizontal), np.sin(horizontal)
    cx, sx = np.cos(tilt), np.sin(tilt)
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    ry = np.array([[cy, 0, -sy], [0, 1, 0], [sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    return rz @ ry @ rx


def potassium_effects(k: float, sensitivity: float) -> dict[str, float]:
    """Strength of hyper- and hypokalaemic change (0 = none) and a mild in-range slope."""
    return {
        "hyper": sensitivity * max(k - 5.0, 0.0) / 2.0,
        "hypo": sensitivity * max(4.0 - k, 0.0) / 1.5,
        "slope": float(np.clip(0.12 * (k - 4.2), -0.2, 0.25)) * (0.5 + 0.5 * min(sensitivity, 2.0)),
    }


def beat_times(rng: np.random.Generator, hr: float, af: bool, ectopy: float) -> tuple[np.ndarray, np.ndarray]:
    """R-peak times (s) covering the 10 s window, and a mask of ventricular premature beats."""
    rr = 60.0 / hr
    n = int(np.ceil(11.5 / rr)) + 3
    resp_f, resp_ph = rng.uniform(0.18, 0.33), rng.uniform(0, 2 * np.pi)
    t0 = -rng.uniform(0.3, 0.3 + rr)
    jitter = rng.normal(0, 0.16 if af else 0.018, n)
    rrs = np.empty(n)
    t = t0
    for i in range(n):  # n ~ 15: respiratory sinus arrhythmia depends on the running time
        rrs[i] = rr * max(0.45, 1 + 0.035 * np.sin(2 * np.pi * resp_f * t + resp_ph) + jitter[i])
        t += rrs[i]
    pvc = rng.random(n) < ectopy * 0.25
    pvc[0] = False
    rrs = np.where(pvc, rrs * 0.62, rrs)  # premature ...
    rrs[1:] = np.where(pvc[:-1], rrs[1:] + rr * 0.38, rrs[1:])  # ... then a compensatory pause
    return t0 + np.concatenate([[0.0], np.cumsum(rrs[:-1])]), pvc


def _wave_table(r: np.ndarray, pvc: np.ndarray, rr: float, tr: dict, eff: dict, af: bool, rng) -> np.ndarray:
    """[waves, beats, 4]: centre (s), left sigma (s), right sigma (s), amplitude scale."""
    h, q = eff["hyper"], eff["hypo"]
    # QRS widens from K ~6.2 and steeply from ~7.6, where it merges with the T wave (sine-wave pattern)
    qrs = tr["qrs_ms"] / 1000 * (1 + 0.45 * max(h - 0.6, 0.0) + 0.8 * max(h - 1.3, 0.0))
    pr = tr["pr_ms"] / 1000 + 0.025 * min(h, 2.0)
    qt = tr["qt_ms"] / 1000 * (rr / 0.81) ** 0.35 - 0.02 * min(h, 2.0) + 0.035 * q
    t_amp = tr["t_amp"] * (1 + eff["slope"]) * (1 + 1.0 * h) * (1 - 0.85 * q) * rng.lognormal(0, 0.12)
    t_narrow = 1 / (1 + 0.35 * h)
    t_up, t_down = 0.062 * t_narrow * (1 + 0.15 * q), (0.042 + 0.02 * min(h, 1.0)) * t_narrow
    p_amp = 0.0 if af else tr["p_amp"] * max(0.05, 1 - 0.45 * h)
    n_beat = ~pvc
    rows = [
        (r - pr, 0.022, 0.022, p_amp),
        (r - qrs * 0.30, qrs * 0.08, qrs * 0.08, 1.0),
        (r, qrs * 0.16, qrs * 0.16, 1 - 0.1 * min(h, 2.0)),
        (r + qrs * 0.32, qrs * 0.11, qrs * 0.12, 1.0),
        (r + qt * 0.45, 0.05, 0.05, -0.06 * q),
        (r + qt - 0.14, t_up, t_down, t_amp),
        (r + qt + 0.04 + 0.02 * q, 0.04, 0.04, 1 + 3.0 * q),
    ]
    table = np.zeros((len(WAVES), r.size, 4))
    for w, (c, sl, sr, a) in enumerate(rows):
        table[w] = np.stack(np.broadcast_arrays(c, sl, sr, a * n_beat), axis=1)
    table[7] = np.stack(np.broadcast_arrays(r, 0.035, 0.04, pvc * 1.0), axis=1)
    table[8] = np.stack(np.broadcast_arrays(r + 0.33, 0.07, 0.06, pvc * 1.0), axis=1)
    return table


def heart_vector(table: np.ndarray, dirs: np.ndarray) -> np.ndarray:
    """[3, samples] heart vector: sum over waves and beats of direction x amplitude x Gaussian pulse.

    Each pulse is evaluated only on a window of +-5 of its widest sigma (vectorised over all pulses)
    and scattered into the wave time courses with one ``bincount``.
    """
    active = table[:, :, 3] != 0
    c, sl, sr, a = (table[active][:, i] for i in range(4))
    w_idx = np.nonzero(active)[0]
    half = int(np.ceil(5 * max(sl.max(), sr.max()) * FS))
    idx = np.rint(c * FS).astype(np.int64)[:, None] + np.arange(-half, half + 1)[None, :]
    dt = idx / FS - c[:, None]
    sig = np.where(dt < 0, sl[:, None], sr[:, None])
    pulses = a[:, None] * np.exp(-0.5 * (dt / sig) ** 2)
    inside = (idx >= 0) & (idx < N_SAMPLES)
    flat = (w_idx[:, None] * N_SAMPLES + idx)[inside]
    per_wave = np.bincount(flat, weights=pulses[inside], minlength=len(WAVES) * N_SAMPLES)
    return dirs.T @ per_wave.reshape(len(WAVES), N_SAMPLES)


def synthesize(k: float, traits: dict, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """One 10 s 12-lead ECG [5000, 12] in mV (MIMIC lead order) for potassium ``k``, and what a cart measures."""
    eff = potassium_effects(k, traits["k_sensitivity"])
    af = bool(traits["af"])
    hr = float(np.clip(traits["hr"] + rng.normal(0, 7), 40, 150))
    r, pvc = beat_times(rng, hr, af, traits["ectopy"])
    table = _wave_table(r, pvc, 60 / hr, traits, eff, af, rng)
    frontal, horizontal = traits["axis_frontal"] + rng.normal(0, 0.05), traits["axis_horizontal"] + rng.normal(0, 0.05)
    dirs = (_rotation(frontal, horizontal, traits["axis_tilt"]) @ _DIRS.T).T
    dirs[4:7] = (_rotation(frontal + traits["t_axis"], horizontal, traits["axis_tilt"]) @ _DIRS[4:7].T).T
    dirs *= (_AMPS * traits["gain"] * rng.lognormal(0, 0.06))[:, None]
    eight = _LEAD_MATRIX @ heart_vector(table, dirs)
    eight = add_noise(eight, rng)
    limb = derive_limb_leads(eight[0], eight[1])
    leads = np.stack([eight[0], eight[1], limb["III"], limb["aVR"], limb["aVF"], limb["aVL"], *eight[2:]], axis=1)
    return leads, _cart_measurements(table, r, pvc, hr, dirs, af, eff, rng)


def _axis_deg(v: np.ndarray) -> int:
    return int(round(np.degrees(np.arctan2(v[1], v[0]))))


def _cart_measurements(table, r, pvc, hr, dirs, af, eff, rng) -> dict:
    """Interval and axis values as the cart's median-beat analysis would report them (ms from beat start)."""
    i = int(np.argmax(~pvc[1:])) + 1
    p_c, qrs_s, t_c = table[0, i, 0], table[1, i, 0] - 2 * table[1, i, 1], table[5, i, 0]
    start = p_c - 0.09

    def ms(x: float) -> int:  # cart's time from the start of its median beat, with a few ms of jitter
        return int(round((x - start) * 1000 + rng.normal(0, 4)))

    qrs_e = table[3, i, 0] + 2.2 * table[3, i, 2]
    t_end = t_c + 2.5 * table[5, i, 2]
    qrs_vec = dirs[1] + dirs[2] + dirs[3]
    return {
        "rr_interval": int(round(60000 / hr)),
        "p_onset": None if af else ms(p_c - 0.05), "p_end": None if af else ms(p_c + 0.05),
        "qrs_onset": ms(qrs_s), "qrs_end": ms(qrs_e), "t_end": ms(t_end),
        "p_axis": None if af else _axis_deg(dirs[0]), "qrs_axis": _axis_deg(qrs_vec),
        "t_axis": _axis_deg(dirs[5] * np.sign(table[5, i, 3] or 1.0)),
        "af": af, "n_pvc": int(pvc[(r > 0) & (r < 10)].sum()), "hr": hr, **eff,
    }
