"""``ecgka lineage``: a dataset version's chain back to the first version, one line per version."""

from __future__ import annotations

from ecgka.cli.options import Command, LineageOptions


def run(o: LineageOptions) -> int:
    from ecgka.data.lineage import lineage_lines

    for line in lineage_lines(o.dataset):
        print(line)
    return 0


COMMAND = Command(LineageOptions, run)
