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
    grid = ds.grid
    words = wording(ds)
    return {
        "data": {
            "dataset fingerprint": ds.fingerprint,
            "dataset schema version": ds.schema_version,
            "built with ecgka": ds.ecgka_version,
            "signal": ", ".join(f"{k}={v}" for k, v in (ds.signal or {}).items()),
            "label": f"{grid.name} ({grid.unit}), {grid.lo} to {grid.hi}, bins of {grid.step}",
            "evaluated split": model.split,
        },
        "intended_use": words.intended_use,
        "limits": list(words.limits),
        "dataset_config": ds.details.get("config"),
    }
