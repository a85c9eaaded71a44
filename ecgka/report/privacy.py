"""A guard that the report holds aggregates only: no subject or study identifier, no date.

``write_report`` gathers the identifiers the runs saw (subject ids of their evaluated predictions) and
scans every text file of the report for them and for date-like strings before the report is published.
Identifiers shorter than ``MIN_ID_DIGITS`` digits are not searched (they collide with ordinary counts;
MIMIC subject and study ids have 8 digits). Waveforms cannot leak: the report never reads shards.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from ecgka.catalog import RunDir
from ecgka.errors import InputError
from ecgka.keys import SPLITS, Col, PredCol

MIN_ID_DIGITS = 6
NUMBER = re.compile(r"(?<![\d.])\d{6,}(?!\d)")  # whole digit runs of at least MIN_ID_DIGITS digits
DATE_PATTERNS = (
    re.compile(r"\b\d{4}-\d{2}-\d{2}\b"),  # ISO dates (MIMIC's shifted years 2100-2200 included)
    re.compile(r"\b\d{1,2}/\d{1,2}/\d{4}\b"),  # DD/MM/YYYY (WFDB headers)
    re.compile(r"\b\d{2}:\d{2}:\d{2}\b"),  # clock times
)
ID_COLUMNS = (PredCol.SUBJECT_ID, Col.STUDY_ID)
TEXT_SUFFIXES = {".html", ".md", ".csv", ".json", ".txt", ".svg"}
EMBEDDED_IMAGE = re.compile(r"data:image/[a-z+]+;base64,[A-Za-z0-9+/=]+")


def identifier_tokens(ids: Iterable) -> set[str]:
    """The string forms of identifiers long enough to be searched."""
    return {str(int(i)) for i in ids if len(str(int(i))) >= MIN_ID_DIGITS}


def find_leaks(text: str, tokens: set[str]) -> list[str]:
    """Identifiers (as whole numbers) and date-like strings found in ``text``."""
    text = EMBEDDED_IMAGE.sub("", text)  # figures are drawn from aggregates; base64 is not text
    leaks = [m.group(0) for p in DATE_PATTERNS for m in p.finditer(text)]
    if tokens:
        for m in NUMBER.finditer(text):
            if m.group(0) in tokens:
                leaks.append(m.group(0))
    return leaks


def check_directory(directory: str | Path, tokens: set[str]) -> None:
    """Raise InputError naming the first file that holds an identifier or a date."""
    for path in sorted(Path(directory).rglob("*")):
        if path.is_file() and path.suffix in TEXT_SUFFIXES:
            leaks = find_leaks(path.read_text(errors="replace"), tokens)
            if leaks:
                raise InputError(f"{path.name}: would publish identifier or date {leaks[0]!r}; "
                                 f"report not written")


def run_identifiers(run_dirs: Iterable[str | Path]) -> set[str]:
    """Subject ids in the runs' prediction files (the identifiers the report must not contain)."""
    import pyarrow.parquet as pq

    tokens: set[str] = set()
    paths = [RunDir(d).predictions_path(s) for d in run_dirs for s in SPLITS]
    for path in (p for p in paths if p.is_file()):
        names = pq.read_schema(path).names
        cols = [c.value for c in ID_COLUMNS if c.value in names]
        table = pq.read_table(path, columns=cols)
        for c in cols:
            tokens |= identifier_tokens(table.column(c).to_pylist())
    return tokens
