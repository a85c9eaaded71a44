"""``hosp/patients.csv.gz`` and ``hosp/transfers.csv.gz`` rows of one subject (the subgroup tables).

Relations (``docs/standin.md``, "Subgroups"): subjects of the renal phenotype (a high potassium baseline, hence
high creatinine in ``labevents``: low eGFR) are older; an episode's first ECG falls in an emergency
department stay when the episode starts in the ED; inpatient episodes with a large potassium excursion go to an
ICU more often, so hyperkalaemia is more common at low eGFR and in the ED / ICU. Every draw comes from
``SeedSequence(seed, spawn_key=(5, subject))``: the rows depend only on (seed, subject).
"""

from __future__ import annotations

import numpy as np

from ecgka.standin.timeline import SubjectPlan

PATIENT_COLUMNS = ("subject_id", "gender", "anchor_age", "anchor_year", "anchor_year_group", "dod")
TRANSFER_COLUMNS = ("subject_id", "hadm_id", "transfer_id", "eventtype", "careunit", "intime", "outtime")
WARDS = ("Medicine", "Med/Surg", "Medicine/Cardiology", "Transplant", "Neurology")
ICUS = ("Medical Intensive Care Unit (MICU)", "Coronary Care Unit (CCU)", "Surgical Intensive Care Unit (SICU)",
        "Cardiac Vascular Intensive Care Unit (CVICU)", "Neuro Surgical Intensive Care Unit (Neuro SICU)")
YEAR_GROUPS = ("2008 - 2010", "2011 - 2013", "2014 - 2016", "2017 - 2019", "2020 - 2022")


def _rng(plan: SubjectPlan, seed: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(5, plan.index)))


def _fmt(plan: SubjectPlan, minutes: float) -> str:
    return f"{plan.datetime_at(minutes).replace(microsecond=0):%Y-%m-%d %H:%M:%S}"


def subject_hosp_rows(plan: SubjectPlan, subject_id: int, hadm_ids: list, seed: int
                      ) -> tuple[list, list[list]]:
    """The patients row and the transfers rows (transfer_id None, assigned when streaming) of one subject."""
    rng = _rng(plan, seed)
    renal = plan.baseline > 4.3
    age = int(np.clip(round(rng.normal(68 if renal else 58, 16)), 18, 91))
    gender = "F" if rng.random() < 0.5 else "M"
    year = plan.epoch.year
    patient = [subject_id, gender, age, year, YEAR_GROUPS[int(rng.integers(len(YEAR_GROUPS)))], ""]
    rows: list[list] = []
    for ep, hadm in zip(plan.episodes, hadm_ids, strict=True):
        t = ep.start
        # a potassium excursion (symptoms, an abnormal outside result) brings the patient to the ED
        ed = rng.random() < (0.8 if ep.inpatient else 0.85 if abs(ep.excursion) > 0.6 else 0.3)
        if ed:  # the episode's first ECG (start + 0..60 min) falls in the ED stay
            t_in, t_out = t - rng.uniform(5, 40), t + rng.uniform(120, 480)
            rows.append([subject_id, hadm if ep.inpatient else "", None, "ED", "Emergency Department",
                         _fmt(plan, t_in), _fmt(plan, t_out)])
            t = t_out
        if not ep.inpatient:
            continue
        end = ep.start + ep.days * 24 * 60
        icu_p = 0.55 if abs(ep.excursion) > 1.0 else 0.1
        unit = ICUS[int(rng.integers(len(ICUS)))] if rng.random() < icu_p else WARDS[int(rng.integers(len(WARDS)))]
        if t < end:
            rows.append([subject_id, hadm, None, "admit", unit, _fmt(plan, t), _fmt(plan, end)])
        rows.append([subject_id, hadm, None, "discharge", "", _fmt(plan, max(end, t)), ""])
    return patient, rows

