"""``ecgka build``: ECG-Ka-DIR Parquet shards from a MIMIC-IV-ECG root and potassium lab exports."""

from __future__ import annotations

import argparse
import sys

HELP = "build ECG-Ka-DIR Parquet shards from MIMIC-IV-ECG and potassium lab exports"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ecg-root", required=True, help="MIMIC-IV-ECG root (holds record_list.csv and files/)")
    parser.add_argument("--labs", required=True, action="append", metavar="FILE",
                        help="lab export (.csv, .csv.gz or .parquet): labevents columns (full or incremental) or a "
                             "simple table subject_id, charttime, potassium[, itemid] (labs.format); repeatable")
    parser.add_argument("--previous", metavar="DATASET_DIR",
                        help="a dataset version to extend: its labs join --labs, its ECGs are reused, its subjects "
                             "keep their splits (docs/retraining.md)")
    parser.add_argument("--d-labitems", metavar="FILE", help="optional d_labitems table: potassium items by label+fluid")
    parser.add_argument("--out", required=True,
                        help="dataset directory to write: new, empty, or a dataset folder (same inputs: resumed or "
                             "skipped)")
    parser.add_argument("--force", action="store_true",
                        help="replace a complete dataset in --out that was built from other inputs or config")
    parser.add_argument("--config", help="build config YAML (default: built-in defaults = configs/data/ecg_ka_dir.yaml)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. signal.leads=[I,II]")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, default=None,
                       help="local worker processes for the signal stage (default: all cores)")
    where.add_argument("--dask-scheduler", metavar="ADDRESS", help="run the signal stage on a Dask cluster")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from ecgka.config import load_config
    from ecgka.data.build import build_dataset
    from ecgka.data.config import BuildConfig
    from ecgka.data.lineage import version_summary
    from ecgka.data.manifest import format_summary

    cfg = load_config(BuildConfig, args.config, args.overrides)
    result = build_dataset(args.ecg_root, args.labs, args.out, cfg, workers=args.workers,
                           dask_scheduler=args.dask_scheduler, d_labitems=args.d_labitems,
                           progress=not args.quiet and sys.stderr.isatty(), force=args.force, log=print,
                           previous=args.previous)
    if result["status"] == "skipped":
        print(f"{args.out}: up to date (fingerprint {result['fingerprint']}), nothing to do")
    else:
        print(f"{args.out}: built (fingerprint {result['fingerprint']}, digest {result['digest']})")
        if result.get("parent"):
            print(version_summary(result))
    print(format_summary(result, result.get("seconds")))
    return 0
