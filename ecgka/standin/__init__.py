"""The MIMIC-IV stand-in (``ecgka synth``): MIMIC-IV-ECG v1.0 records and MIMIC-IV hosp lab tables with
potassium-dependent ECG physiology, deterministic for a seed. See ``docs/standin.md``."""

from __future__ import annotations

from ecgka.standin.generator import NOTE_LINK_COLUMNS, RECORD_LIST_COLUMNS, generate_standin
from ecgka.standin.labs import D_LABITEMS_COLUMNS, LAB_COLUMNS
from ecgka.standin.measurements import MEASUREMENT_COLUMNS
from ecgka.standin.wfdb_writer import LEADS

__all__ = [
    "D_LABITEMS_COLUMNS", "LAB_COLUMNS", "LEADS", "MEASUREMENT_COLUMNS", "NOTE_LINK_COLUMNS", "RECORD_LIST_COLUMNS",
    "generate_standin",
]
