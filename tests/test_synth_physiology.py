"""The dipole ECG model and the subject timelines, tested on the signals they produce."""

from __future__ import annotations

import numpy as np
import pytest

from ecgka.standin.physiology import beat_times, synthesize
from ecgka.standin.timeline import K_MAX, K_MIN, plan_subject
from ecgka.standin.wfdb_writer import LEADS, header_text, to_digital

TRAITS = {
    "hr": 70.0, "gain": 1.0, "axis_frontal": 0.15, "axis_horizontal": 0.0, "axis_tilt": 0.0, "t_amp": 1.0,
    "p_amp": 1.0, "qrs_ms": 92.0, "pr_ms": 160.0, "qt_ms": 392.0, "k_sensitivity": 1.0, "ectopy": 0.0,
    "af": 0.0, "t_axis": 0.0,
}
II = LEADS.index("II")


def ecg(k: float, seed: int = 3, **traits) -> np.ndarray:
    """Same seed -> same nuisance (beats, noise): differences between two calls come from potassium only."""
    return synthesize(k, {**TRAITS, **traits}, np.random.default_rng(seed))[0]


def r_samples(seed: int = 3, hr: float = TRAITS["hr"]) -> list[int]:
    """R-peak sample positions of ``ecg(.., seed)``: replays the generator's first draws (heart rate, beats),
    which do not depend on potassium, so tall T waves cannot be mistaken for R peaks."""
    rng = np.random.default_rng(seed)
    hr = float(np.clip(hr + rng.normal(0, 7), 40, 150))
    r, _ = beat_times(rng, hr, False, 0.0)
    return [int(round(t * 500)) for t in r if 0.4 < t < 9.3]


def t_peak(x: np.ndarray) -> float:
    """T-wave peak relative to the PR level: largest deflection 150-450 ms after R of the median beat."""
    beat = np.median(np.stack([x[i - 150 : i + 300] for i in r_samples()]), axis=0)
    seg = beat[150 + 75 : 150 + 225]
    return float(seg[np.argmax(np.abs(seg))] - np.median(beat[150 - 40 : 150 - 20]))


def test_limb_leads_are_derived_exactly():
    x = ecg(4.2)
    lead = dict(zip(LEADS, x.T, strict=True))
    np.testing.assert_allclose(lead["III"], lead["II"] - lead["I"], atol=1e-12)
    np.testing.assert_allclose(lead["aVR"], -(lead["I"] + lead["II"]) / 2, atol=1e-12)
    np.testing.assert_allclose(lead["aVL"], lead["I"] - lead["II"] / 2, atol=1e-12)
    np.testing.assert_allclose(lead["aVF"], lead["II"] - lead["I"] / 2, atol=1e-12)


def test_t_wave_grows_with_potassium_and_inverts_when_very_low():
    t = {k: t_peak(ecg(k)[:, II]) for k in (1.9, 3.0, 4.2, 6.0, 7.5)}
    assert t[1.9] < t[3.0] < t[4.2] < t[6.0] < t[7.5]
    assert t[7.5] > 1.8 * t[4.2] and t[1.9] < 0.25 * t[4.2]


def test_hyperkalaemia_flattens_p_and_widens_qrs():
    normal, high = ecg(4.2, hr=52.0)[:, II], ecg(8.0, hr=52.0)[:, II]  # slow: T and next P far apart
    rn = rh = r_samples(hr=52.0)

    def p_height(x, lo, hi):  # P peak 100-200 ms before R (PR is longer at 8.0), above the level before it
        return np.median([x[i - hi : i - lo].max() - x[i - hi - 20 : i - hi].mean() for i in rn])

    assert p_height(high, 55, 110) < 0.6 * p_height(normal, 45, 95)

    def qrs_width(x, peaks):  # samples above half the R amplitude
        return np.median([(x[i - 40 : i + 40] > x[i] / 2 + x[i - 40 : i + 40].min() / 2).sum() for i in peaks])

    assert qrs_width(high, rh) > 1.15 * qrs_width(normal, rn)


def test_low_sensitivity_patients_show_little_change():
    blunt = t_peak(ecg(7.0, k_sensitivity=0.1)[:, II]) / t_peak(ecg(4.2, k_sensitivity=0.1)[:, II])
    sharp = t_peak(ecg(7.0)[:, II]) / t_peak(ecg(4.2)[:, II])
    assert blunt < 1.3 < sharp


def test_heart_rate_and_ectopy():
    r, pvc = beat_times(np.random.default_rng(0), 60.0, False, 0.0)
    assert np.diff(r).mean() == pytest.approx(1.0, rel=0.05) and not pvc.any()
    r, pvc = beat_times(np.random.default_rng(0), 60.0, False, 4.0)  # ectopy 4.0 -> every beat may be a PVC
    assert pvc[1:].any()


def test_plans_are_deterministic_and_bounded():
    a, b = plan_subject(7, seed=1), plan_subject(7, seed=1)
    np.testing.assert_array_equal(a.ecg_times, b.ecg_times)
    np.testing.assert_array_equal(a.draw_k, b.draw_k)
    assert a.traits == b.traits
    assert plan_subject(0, seed=123).ecg_times.size >= 1
    ks = np.concatenate([plan_subject(i, 2).draw_k for i in range(200)])
    assert ks.min() >= K_MIN and ks.max() <= K_MAX


def test_header_checksum_and_initial_values():
    d = to_digital(ecg(4.2))
    lines = header_text(41234567, 12345678, __import__("datetime").datetime(2150, 3, 4, 5, 6), d).splitlines()
    assert lines[0] == "41234567 12 500 5000 05:06:00 04/03/2150"
    fields = lines[2].split()
    assert int(fields[5]) == d[0, 1] and int(fields[6]) == int(d[:, 1].astype(np.int64).sum() % 65536)
