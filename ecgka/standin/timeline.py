"""One date-shifted timeline per subject: episodes of care, ECG times, blood draws and potassium.

Potassium follows a subject baseline plus, per episode, an acute excursion that decays with treatment
(hyperkalaemia in renal patients, hypokalaemia with diuretics) and a slow physiological drift. ECGs are
generated from the potassium *at the ECG time*; labs measure it at the draw time with assay noise, so
the lab label of an ECG is noisy like in MIMIC (timing offsets, haemolysis, assay variation).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

K_MIN, K_MAX = 1.6, 9.0
MIN_PER_DAY = 24 * 60.0
AXIS_MEAN, AXIS_SD = 0.15, 0.55  # frontal rotation of the heart (rad): hospital patients, wide spread
LAB_ONLY = 0.08  # fraction of subjects in the lab tables without any ECG

# subject phenotype -> (probability, baseline shift, P(hyper excursion), P(hypo excursion) per episode)
PHENOTYPES: dict[str, tuple[float, float, float, float]] = {
    "typical": (0.74, 0.0, 0.03, 0.06),
    "renal": (0.12, 0.35, 0.30, 0.03),
    "diuretic": (0.12, -0.30, 0.01, 0.32),
    "labile": (0.02, 0.0, 0.30, 0.30),
}


@dataclass
class Episode:
    start: float  # minutes since the subject's epoch
    days: float
    inpatient: bool
    excursion: float  # mmol/L added at admission, decays with tau
    tau: float  # minutes
    drift: np.ndarray  # (3, 3): amplitude, period (min), phase of slow drift components


@dataclass
class SubjectPlan:
    index: int
    epoch: datetime
    baseline: float
    traits: dict[str, float]
    episodes: list[Episode]
    ecg_times: np.ndarray  # true times (minutes), sorted
    ecg_k: np.ndarray  # potassium at each ECG (physiological, drives the waveform)
    ecg_episode: np.ndarray  # episode index per ECG
    draw_times: np.ndarray  # blood draw times (minutes), sorted
    draw_k: np.ndarray
    draw_episode: np.ndarray
    draw_stat: np.ndarray  # bool: STAT priority

    def datetime_at(self, minutes: float) -> datetime:
        return self.epoch + timedelta(minutes=float(minutes))


def potassium_at(baseline: float, ep: Episode, t: np.ndarray) -> np.ndarray:
    """Potassium (mmol/L) during episode ``ep`` at times ``t`` (minutes since the subject's epoch)."""
    dt = np.maximum(np.asarray(t, dtype=np.float64) - ep.start, 0.0)
    k = baseline + ep.excursion * np.exp(-dt / ep.tau)
    amp, period, phase = ep.drift
    k = k + (amp[:, None] * np.sin(2 * np.pi * dt[None, :] / period[:, None] + phase[:, None])).sum(0)
    return np.clip(k, K_MIN, K_MAX)


def _traits(rng: np.random.Generator) -> dict[str, float]:
    """Per-subject ECG phenotype: the nuisance that makes one patient's ECGs differ from another's."""
    return {
        "hr": float(np.clip(rng.normal(74, 11), 48, 115)),
        "gain": float(rng.lognormal(0.0, 0.22)),
        "axis_frontal": float(rng.normal(AXIS_MEAN, AXIS_SD)),  # radians, rotation about the sagittal axis
        "axis_horizontal": float(rng.normal(0.0, 0.25)),
        "axis_tilt": float(rng.normal(0.0, 0.15)),
        "t_amp": float(rng.lognormal(0.0, 0.35)),
        "p_amp": float(rng.lognormal(0.0, 0.25)),
        "qrs_ms": float(np.clip(rng.normal(92, 9), 70, 130)),
        "pr_ms": float(np.clip(rng.normal(160, 18), 110, 230)),
        "qt_ms": float(np.clip(rng.normal(392, 22), 330, 470)),
        # how strongly this patient's ECG shows a potassium disorder (about half show clear signs)
        "k_sensitivity": float(rng.gamma(1.6, 1 / 1.6)),
        "ectopy": float(rng.beta(0.6, 8.0)),
        "af": float(rng.random() < 0.05),
        "t_axis": float(rng.normal(0.0, 0.35)),  # QRS-T angle varies between patients
    }


def _excursion(rng: np.random.Generator, p_hyper: float, p_hypo: float) -> float:
    u = rng.random()
    if u < p_hyper:
        return float(rng.gamma(1.5, 0.75) + 0.6)  # +0.6 .. ~+5 mmol/L
    if u < p_hyper + p_hypo:
        return float(-(rng.gamma(1.6, 0.35) + 0.3))  # -0.3 .. ~-2.5 mmol/L
    return 0.0


def _episodes(rng: np.random.Generator, p_hyper: float, p_hypo: float) -> list[Episode]:
    n = 1 + rng.poisson(1.3)
    starts = np.cumsum(rng.exponential(200.0, n) + 2.0) * MIN_PER_DAY
    out = []
    for start in starts:
        inpatient = bool(rng.random() < 0.65)
        drift = np.stack([rng.uniform(0.02, 0.12, 3), rng.uniform(600, 4000, 3), rng.uniform(0, 2 * np.pi, 3)])
        out.append(
            Episode(
                start=float(start),
                days=float(rng.gamma(2.0, 1.6) + 0.5) if inpatient else 0.1,
                inpatient=inpatient,
                excursion=_excursion(rng, p_hyper, p_hypo),
                tau=float(rng.uniform(240, 1800)),
                drift=drift,
            )
        )
    return out


def _episode_events(rng: np.random.Generator, ep: Episode) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ECG times, draw times and STAT flags within one episode."""
    span = ep.days * MIN_PER_DAY
    n_ecg = 1 + rng.poisson(0.9) if ep.inpatient else int(rng.random() < 0.8)
    ecg = ep.start + np.concatenate([[rng.uniform(0, 60)], rng.uniform(0, span, max(n_ecg - 1, 0))])[:n_ecg]
    draws = [ep.start + rng.uniform(-30, 90, 1)] if ep.inpatient or rng.random() < 0.5 else []
    if ep.inpatient:
        per_day = 0.6 + 1.6 * (abs(ep.excursion) > 0.8)
        draws.append(ep.start + rng.uniform(0, span, rng.poisson(per_day * ep.days)))
    # about half of ECGs get a potassium draw within the hour (ED and ward practice)
    near = ecg[rng.random(ecg.size) < 0.25]
    draws.append(near + rng.normal(10, 20, near.size))
    draw_t = np.sort(np.concatenate(draws)) if draws else np.zeros(0)
    return np.sort(ecg), draw_t, rng.random(draw_t.size) < (0.45 if ep.inpatient else 0.1)


def plan_subject(index: int, seed: int) -> SubjectPlan:
    """The whole timeline of subject ``index``; depends only on (seed, index)."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0, index)))
    names = list(PHENOTYPES)
    probs = np.array([PHENOTYPES[n][0] for n in names])
    _, shift, p_hyper, p_hypo = PHENOTYPES[names[rng.choice(len(names), p=probs / probs.sum())]]
    baseline = float(np.clip(rng.normal(4.12, 0.22) + shift, 3.2, 5.4))
    traits = _traits(rng)
    episodes = _episodes(rng, p_hyper, p_hypo)
    first_year = int(rng.integers(2110, 2200))
    epoch = datetime(first_year, 1, 1) + timedelta(minutes=int(rng.integers(0, 365 * 24 * 60)))
    ecg, draw = [], []
    for i, ep in enumerate(episodes):
        e, d, s = _episode_events(rng, ep)
        ecg.append((e, np.full(e.size, i)))
        draw.append((d, np.full(d.size, i), s))
    ecg_t = np.concatenate([e for e, _ in ecg])
    ecg_ep = np.concatenate([i for _, i in ecg])
    if index > 0 and rng.random() < LAB_ONLY:  # subjects with labs but no ECG
        ecg_t, ecg_ep = ecg_t[:0], ecg_ep[:0]
    elif index == 0 and ecg_t.size == 0:  # subject 0 always has an ECG: no stand-in is empty
        ecg_t, ecg_ep = np.array([episodes[0].start + 5.0]), np.array([0])
    draw_t = np.concatenate([d for d, _, _ in draw])
    draw_ep = np.concatenate([i for _, i, _ in draw])
    stat_f = np.concatenate([s for _, _, s in draw])
    return SubjectPlan(
        index=index, epoch=epoch, baseline=baseline, traits=traits, episodes=episodes,
        ecg_times=ecg_t, ecg_k=_k_series(baseline, episodes, ecg_t, ecg_ep), ecg_episode=ecg_ep,
        draw_times=draw_t, draw_k=_k_series(baseline, episodes, draw_t, draw_ep), draw_episode=draw_ep,
        draw_stat=stat_f,
    )


def _k_series(baseline: float, episodes: list[Episode], t: np.ndarray, ep_idx: np.ndarray) -> np.ndarray:
    out = np.empty(t.size)
    for i, ep in enumerate(episodes):
        sel = ep_idx == i
        if sel.any():
            out[sel] = potassium_at(baseline, ep, t[sel])
    return out
