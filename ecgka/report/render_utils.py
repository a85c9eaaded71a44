"""Cell formatting shared by the HTML and Markdown pages (3 decimals, null as an en dash)."""

from __future__ import annotations

import math

import numpy as np

from ecgka.report.wording import wording

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
    words = wording(ds)
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
        "intended_use": words.intended_use,
        "limits": list(words.limits),
        "dataset_config": ds.get("config"),
    }
