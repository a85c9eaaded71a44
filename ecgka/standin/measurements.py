"""``machine_measurements.csv`` rows: the cart's intervals, axes and free-text statements for one ECG.

Missing numbers use the cart's sentinels (29999 for "not measurable", occasionally 32767, -32768 or
65535), as in the real file. Statements follow the cart's usual wording; most records use 2-5 of the
18 report columns and leave the rest empty.
"""

from __future__ import annotations

import numpy as np

N_REPORTS = 18
MEASUREMENT_COLUMNS = (
    "subject_id", "study_id", "cart_id", "ecg_time", *[f"report_{i}" for i in range(N_REPORTS)],
    "bandwidth", "filtering", "rr_interval", "p_onset", "p_end", "qrs_onset", "qrs_end", "t_end", "p_axis",
    "qrs_axis", "t_axis",
)
NUMERIC = ("rr_interval", "p_onset", "p_end", "qrs_onset", "qrs_end", "t_end", "p_axis", "qrs_axis", "t_axis")
SENTINELS = (32767, -32768, 65535)
NOT_MEASURED = 29999


def _rhythm(m: dict) -> str:
    if m["af"]:
        return "Atrial fibrillation"
    if m["hr"] < 60:
        return "Sinus bradycardia"
    return "Sinus tachycardia" if m["hr"] > 100 else "Sinus rhythm"


def statements(m: dict, rng: np.random.Generator) -> list[str]:
    """What the cart's interpretation program prints, in order: rhythm, findings, overall verdict."""
    out = [_rhythm(m)]
    if m["n_pvc"]:
        out.append("Ventricular premature complex" if m["n_pvc"] == 1 else "Multiple ventricular premature complexes")
    if m["qrs_axis"] < -30:
        out.append("Left axis deviation")
    elif m["qrs_axis"] > 100:
        out.append("Right axis deviation")
    if m["qrs_end"] - m["qrs_onset"] > 120:
        out.append("Intraventricular conduction delay")
    if m["hyper"] > 0.8 and rng.random() < 0.5:
        out.append("Peaked T waves" if rng.random() < 0.6 else "T wave changes suggest hyperkalemia")
    if m["hypo"] > 0.8 and rng.random() < 0.5:
        out.append("Prominent U waves" if rng.random() < 0.5 else "ST-T changes may be due to hypokalemia")
    elif rng.random() < 0.12:
        out.append("Nonspecific T wave abnormality")
    normal = len(out) == 1 and out[0] == "Sinus rhythm"
    out.append("Normal ECG" if normal else ("Borderline ECG" if len(out) <= 2 else "Abnormal ECG"))
    return out


def _numbers(m: dict, rng: np.random.Generator) -> list[int]:
    vals = []
    for name in NUMERIC:
        v = m[name]
        if v is None:
            v = NOT_MEASURED
        elif rng.random() < 0.004:
            v = int(SENTINELS[int(rng.integers(len(SENTINELS)))])
        vals.append(int(v))
    return vals


def measurement_row(subject_id: int, study_id: int, cart_id: int, ecg_time: str, m: dict, seed: int) -> list:
    """One CSV row; the randomness of the wording depends only on (seed, study_id)."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(5, study_id)))
    reports = statements(m, rng)[:N_REPORTS]
    reports += [""] * (N_REPORTS - len(reports))
    return [subject_id, study_id, cart_id, ecg_time, *reports, "0.005-150 Hz", "60 Hz notch Baseline filter",
            *_numbers(m, rng)]
