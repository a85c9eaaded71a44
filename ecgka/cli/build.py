"""``ecgka build``: ECG-Ka-DIR Parquet shards from a MIMIC-IV-ECG root and potassium lab exports."""

from __future__ import annotations

import sys

from ecgka.cli.options import BuildCommand, Command


def run(o: BuildCommand) -> int:
    from ecgka.data.lineage import version_summary
    from ecgka.data.manifest import format_summary

    cfg = o.load_config()
    result = o.execute(o.out, cfg=cfg, force=o.force, progress=not o.quiet and sys.stderr.isatty(), log=print)
    if result["status"] == "skipped":
        print(f"{o.out}: up to date (fingerprint {result['fingerprint']}), nothing to do")
    else:
        print(f"{o.out}: built (fingerprint {result['fingerprint']}, digest {result['digest']})")
        if result.get("parent"):
            print(version_summary(result))
    print(format_summary(result, result.get("seconds")))
    return 0


COMMAND = Command(BuildCommand, run)
