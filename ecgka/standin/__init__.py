"""The MIMIC-IV stand-in (``ecgka synth``): MIMIC-IV-ECG v1.0 records and MIMIC-IV hosp lab tables with
potassium-dependent ECG physiology, deterministic for a seed. See ``docs/standin.md``.

A package of its own, beside the build (``ecgka.data``) rather than inside it: it writes raw inputs in
MIMIC's formats and imports nothing from the build (only ``ecgka.errors`` and ``ecgka.io``), so the build
reads a stand-in exactly as it reads a real MIMIC-IV copy. Modules: ``generator`` (orchestration and the
root CSVs), ``timeline`` (visits, ECG and lab times), ``physiology`` and ``noise`` (the signals),
``labs`` (lab tables), ``measurements`` (machine measurements), ``wfdb_writer`` (records), ``ids``.
"""

from __future__ import annotations

from ecgka.standin.generator import (
    D_LABITEMS,
    ECG_DIR,
    HOSP_DIR,
    LABEVENTS,
    NOTE_LINK_COLUMNS,
    RECORD_LIST,
    RECORD_LIST_COLUMNS,
    generate_standin,
    standin_complete,
)
from ecgka.standin.labs import D_LABITEMS_COLUMNS, LAB_COLUMNS
from ecgka.standin.measurements import MEASUREMENT_COLUMNS
from ecgka.standin.wfdb_writer import LEADS

__all__ = [
    "D_LABITEMS", "D_LABITEMS_COLUMNS", "ECG_DIR", "HOSP_DIR", "LABEVENTS", "LAB_COLUMNS", "LEADS", "MEASUREMENT_COLUMNS", "NOTE_LINK_COLUMNS",
    "RECORD_LIST", "RECORD_LIST_COLUMNS", "generate_standin", "standin_complete",
]
