"""``ecgka age``: prepare a face-age DIR split (AgeDB-DIR, IMDB-WIKI-DIR) and pack its images (docs/age.md).

    ecgka age prepare agedb --images DIR --out CSV       (or --metadata CSV instead of --images)
    ecgka age prepare imdb-wiki --images DIR --out CSV
    ecgka age pack --csv CSV --images DIR --out DIR
"""

from __future__ import annotations

import argparse

from ecgka.errors import InputError
from ecgka.names import NameTable, look_up_option

HELP = "prepare a face-age DIR split (agedb, imdb-wiki) or pack its images into Parquet shards"
ACTIONS: NameTable = NameTable("age action")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", metavar="ACTION", help="prepare | pack")
    parser.add_argument("dataset", nargs="?", metavar="DATASET", help="prepare: agedb | imdb-wiki")
    parser.add_argument("--images", metavar="DIR", help="image root (prepare: the dataset folder; pack: the "
                                                        "folder the CSV paths are relative to)")
    parser.add_argument("--metadata", metavar="CSV", help="prepare: an (age, path) table, in its row order, "
                                                          "instead of --images")
    parser.add_argument("--csv", metavar="CSV", help="pack: the DIR split CSV (age,path,split)")
    parser.add_argument("--out", required=True, metavar="PATH", help="prepare: output CSV; pack: output folder")
    parser.add_argument("--rows-per-shard", type=int, default=1024, metavar="N", help="pack: rows per shard")
    parser.add_argument("--workers", type=int, default=4, metavar="W", help="threads checking images")


@ACTIONS.register("prepare")
def _prepare(args: argparse.Namespace) -> int:
    from ecgka.age.prepare import prepare_split

    if args.dataset is None:
        raise InputError("age prepare: name the dataset (agedb or imdb-wiki)")
    summary = prepare_split(args.dataset, args.out, images=args.images, metadata=args.metadata)
    print(f"wrote {summary['out']}: train {summary['train']}, val {summary['val']}, test {summary['test']}"
          + (f" ({summary['no_split']} rows with an age outside 0-120 left out)" if summary["no_split"] else ""))
    return 0


@ACTIONS.register("pack")
def _pack(args: argparse.Namespace) -> int:
    from ecgka.age.shards import pack_age_shards

    if args.csv is None or args.images is None:
        raise InputError("age pack: give --csv CSV and --images DIR")
    manifest = pack_age_shards(args.csv, args.images, args.out, rows_per_shard=args.rows_per_shard,
                               workers=args.workers)
    counts = manifest["counts"]
    print(f"packed {args.out}: train {counts['train']}, val {counts['val']}, test {counts['test']}, "
          f"skipped {manifest['skipped']} (listed in skipped.csv)")
    return 0


def run(args: argparse.Namespace) -> int:
    return ACTIONS.get(look_up_option(args.action, ACTIONS.names(), "age action"))(args)
