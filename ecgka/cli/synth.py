"""``ecgka synth``: write a MIMIC-IV(-ECG) stand-in (see docs/standin.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ecgka.progress import progress_bar
from ecgka.standin.generator import ECG_DIR, HOSP_DIR, LABEVENTS

HELP = "write a MIMIC-IV-ECG v1.0 + MIMIC-IV hosp stand-in with potassium-dependent ECG physiology"


def _int(text: str) -> int:
    """Parse an integer; range checks happen in generate_standin so the messages are in one place."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (must not exist or be empty)")
    parser.add_argument("--force", action="store_true", help="replace a stand-in folder written by ecgka synth")
    parser.add_argument("--subjects", type=_int, default=200, metavar="N",
                        help="subjects in the lab tables, ~92%% of them with ECGs (default 200)")
    parser.add_argument("--seed", type=_int, default=0, metavar="S",
                        help="random seed; same seed, same bytes (default 0)")
    parser.add_argument("--workers", type=_int, default=None, metavar="W",
                        help="worker processes (default: all cores)")


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


def run(args: argparse.Namespace) -> int:
    from ecgka.standin import generate_standin

    bar = progress_bar(total=0, unit="rec", desc="ECG records", leave=False)  # shown on a terminal only

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    try:
        summary = generate_standin(
            args.out, subjects=args.subjects, seed=args.seed, workers=args.workers, progress=progress,
            force=args.force)
    finally:
        bar.close()
    print(format_summary(summary))
    return 0
