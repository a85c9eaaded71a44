"""The ``subgroups`` block of metrics.json: the build's subgroup columns of a predictions table
(``ecgka.data.subgroups``) handed to the pure metrics (``ecgka.metrics.subgroups``)."""

from __future__ import annotations

import numpy as np

from ecgka.data.subgroups import AGE_BANDS, CARE_SETTINGS, EGFR_STAGES, SEXES, UNKNOWN, age_band
from ecgka.metrics.subgroups import EVENTS, subgroup_metrics

ORDERS = {"sex": SEXES, "age_band": AGE_BANDS, "care_setting": CARE_SETTINGS, "egfr_stage": EGFR_STAGES}


def prediction_subgroups(test, groups, clinical: dict | None, n_boot: int = 1000, seed: int = 0) -> dict | None:
    """metrics.json ``subgroups`` from a predictions table with the subgroup columns and the shot group of each
    row; None without subgroup columns or when every factor is unknown."""
    if clinical is None or "sex" not in test:
        return None
    factors = {"sex": test["sex"].to_numpy(), "age_band": age_band(test["age"]),
               "care_setting": test["care_setting"].to_numpy(), "egfr_stage": test["egfr_stage"].to_numpy()}
    factors = {k: v for k, v in factors.items() if set(np.asarray(v, dtype=object).astype(str)) != {UNKNOWN}}
    if not factors:
        return None
    cuts = {n: ((clinical.get("conditions", {}).get(n) or {}).get("operating_point") or {}).get("threshold")
            for n in EVENTS}
    return subgroup_metrics(test["prediction"].to_numpy(), test["label"].to_numpy(), test["subject_id"].to_numpy(),
                            np.asarray(groups) == "few", factors, cuts, n_boot, seed, orders=ORDERS)
