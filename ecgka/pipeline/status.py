"""``ecgka run --status PIPELINE_DIR``: the stages that ran in a pipeline folder, from its ``log.jsonl``.

``log.jsonl`` holds one JSON line per stage that ran, written by the runner when the stage ended, in a
sequential run and a parallel one alike: ``stage``, ``kind``, ``start`` and ``end`` (UTC, ISO 8601),
``seconds``, ``status`` (done or failed), ``worker`` (the Dask worker's name; ``inline`` in a sequential
run), ``gpu`` (the device the stage saw; null on a CPU), ``exit_code`` and ``error``. Runs append to it, so
a resumed job shows each attempt.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ecgka.catalog import PipelineDir
from ecgka.errors import InputError

COLUMNS = ("stage", "status", "start", "end", "seconds", "worker", "gpu")


def read_log(folder: str | Path) -> list[dict[str, Any]]:
    """The records of a pipeline folder's ``log.jsonl``; a missing log or a bad line: one-line InputError."""
    path = PipelineDir(folder).log
    if not path.is_file():
        raise InputError(f"{path}: no such file (no stage has run in {folder}, or it is no pipeline folder)")
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}: line {number}: not JSON ({exc.msg})") from None
    return records


def _cell(record: dict[str, Any], column: str) -> str:
    value = record.get(column)
    if value is None:
        return "-"
    if column == "seconds":
        return f"{float(value):.1f}"
    return str(value)


def status_table(records: list[dict[str, Any]]) -> str:
    """The records as an aligned text table (one row per stage run, failures with their reason below)."""
    rows = [list(COLUMNS)] + [[_cell(r, c) for c in COLUMNS] for r in records]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = []
    for index, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
        record = records[index - 1] if index else {}
        if record.get("error"):
            lines.append(f"    {record['error']}")
    failed = sum(r.get("status") == "failed" for r in records)
    lines.append(f"{len(records)} stage run(s), {failed} failed")
    return "\n".join(lines)
