"""``ecgka report RUN_DIR [RUN_DIR ...] --out DIR [--split test] [--title TEXT]``."""

from __future__ import annotations

import argparse

HELP = ("write the clinical report of evaluated runs: DIR/report.html (self-contained), report.md, "
        "tables/*.csv, figures/*.png and metrics.json")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="evaluated run directories")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="report directory: new, empty, or a report folder (regenerated as a whole)")
    parser.add_argument("--force", action="store_true", help="replace a report folder that reports other runs")
    parser.add_argument("--split", default="test", choices=["val", "test"], help="evaluated split to report")
    parser.add_argument("--dataset", metavar="FINGERPRINT",
                        help="report the runs' evaluations on another dataset (`ecgka evaluate "
                             "--allow-other-dataset`, RUN/eval/FINGERPRINT/) instead of their own")
    parser.add_argument("--group-by-dataset", action="store_true",
                        help="runs evaluated on different datasets: one report per dataset (DIR/datasets/FP/) "
                             "under an index page, never compared across datasets (default: refused)")
    parser.add_argument("--title", help="the report's title (default: ECG potassium regression: evaluation report)")


def run(args: argparse.Namespace) -> int:
    from ecgka.report import write_report

    path = write_report(args.run_dirs, args.out, split=args.split, title=args.title, force=args.force,
                        dataset=args.dataset, group_by_dataset=args.group_by_dataset, log=print)
    print(f"report: {path}")
    return 0
