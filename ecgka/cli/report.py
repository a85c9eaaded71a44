"""``ecgka report RUN_DIR [RUN_DIR ...] --out DIR [--split test] [--title TEXT]``."""

from __future__ import annotations

from ecgka.cli.options import Command, ReportCommand


def run(o: ReportCommand) -> int:
    path = o.execute(o.out, force=o.force, log=print)
    print(f"report: {path}")
    return 0


COMMAND = Command(ReportCommand, run)
