"""``ecgka build``: ECG-Ka-DIR Parquet shards from a MIMIC-IV-ECG root and potassium lab exports."""

from __future__ import annotations

from ecgka.cli.options import BuildCommand, Command
from ecgka.console import say


def run(o: BuildCommand) -> int:
    from ecgka.data.lineage import version_summary
    from ecgka.data.manifest import format_summary

    cfg = o.load_config()
    result = o.execute(o.out, cfg=cfg, force=o.force, progress=not o.quiet, log=say)
    if result["status"] == "skipped":
        say(f"{o.out}: up to date (fingerprint {result['fingerprint']}), nothing to do")
    else:
        say(f"{o.out}: built (fingerprint {result['fingerprint']}, digest {result['digest']})")
        if result.get("parent"):
            say(version_summary(result))
    say(format_summary(result, result.get("seconds")))
    return 0


COMMAND = Command(BuildCommand, run)
