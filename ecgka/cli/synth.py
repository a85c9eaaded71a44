"""``ecgka synth``: write a MIMIC-IV(-ECG) stand-in (see docs/standin.md)."""

from __future__ import annotations

from pathlib import Path

from ecgka.cli.options import Command, SynthCommand
from ecgka.console import say
from ecgka.progress import progress_bar
from ecgka.standin.generator import ECG_DIR, HOSP_DIR, LABEVENTS


def format_summary(summary: dict) -> str:
    rows = [
        ("subjects", summary["subjects"]), ("subjects with ECGs", summary["subjects_with_ecg"]),
        ("ECG records", summary["records"]), ("lab rows", summary["lab_rows"]),
        ("potassium labs", summary["potassium_labs"]), ("workers", summary["workers"]),
        ("seconds", summary["seconds"]),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"stand-in written to {summary['out']}"]
    lines += [f"  {k:<{width}}  {v}" for k, v in rows]
    out = Path(summary["out"])
    lines += [f"  build with: --ecg-root {out / ECG_DIR} --labs {out / HOSP_DIR / LABEVENTS}"]
    return "\n".join(lines)


def run(o: SynthCommand) -> int:
    bar = progress_bar(total=0, lines=True, unit="rec", desc="ECG records", leave=False)  # shown on a terminal only

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    try:
        summary = o.execute(o.out, force=o.force, progress=progress)
    finally:
        bar.close()
    say(format_summary(summary))
    return 0


COMMAND = Command(SynthCommand, run)
