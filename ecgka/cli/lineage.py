"""``ecgka lineage``: a dataset version's chain back to the first version, one line per version."""

from __future__ import annotations

import argparse

HELP = "print a dataset version's chain of parents back to the first version"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", metavar="DATASET_DIR", help="a dataset folder written by `ecgka build`")


def run(args: argparse.Namespace) -> int:
    from ecgka.data.lineage import lineage_lines

    for line in lineage_lines(args.dataset):
        print(line)
    return 0
