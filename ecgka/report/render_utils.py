"""Cell formatting shared by the HTML and Markdown pages (3 decimals, null as an en dash)."""

from __future__ import annotations

import math

import numpy as np

MISSING = "–"


def fmt(value, decimals: int = 3) -> str:
    """A table cell: integers as is, floats rounded, null/NaN as an en dash."""
    if value is None:
        return MISSING
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return MISSING if math.isnan(value) else f"{float(value):.{decimals}f}"
    return str(value)


def model_card(model) -> dict:
    """The model card's fields: data identity, configs, intended use and limits."""
    ds = model.main_dataset
    label = ds.get("label", {})
    return {
        "data": {
            "dataset fingerprint": ds.get("fingerprint"),
            "dataset schema version": ds.get("schema_version"),
            "built with ecgka": ds.get("ecgka_version"),
            "signal": ", ".join(f"{k}={v}" for k, v in (ds.get("signal") or {}).items()),
            "label": f"{label.get('name', 'potassium')} ({label.get('unit', 'mmol/L')}), "
                     f"{label.get('lo')} to {label.get('hi')}, bins of {label.get('step')}",
            "evaluated split": model.split,
        },
        "intended_use": (
            "Research on estimating serum potassium from the ECG and on imbalanced regression (Dist Loss "
            "against the baselines). Screening aid hypotheses only: not a diagnostic device, not validated "
            "for clinical decisions; a laboratory measurement remains the reference."
        ),
        "limits": [
            "Trained and evaluated on one source (MIMIC-IV-ECG paired with MIMIC-IV labs, or a synthetic "
            "stand-in): performance elsewhere is unknown.",
            "Validation and test sets are balanced over potassium bins, so PPV/NPV reflect that balance, "
            "not clinical prevalence.",
            "The ECG-lab pairing window allows potassium to change between the ECG and the draw.",
            "Few-shot (hypo/hyperkalaemic) regions hold few ECGs: their metrics have wide intervals.",
            "Operating points are fixed on the validation split for a target sensitivity and are not "
            "re-tuned on test.",
        ],
        "dataset_config": ds.get("config"),
    }
