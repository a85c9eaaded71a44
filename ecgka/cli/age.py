"""``ecgka age prepare|pack|synth``: the face-age DIR benchmarks (docs/age.md).

    ecgka age prepare agedb --images DIR --out CSV       (or --metadata CSV instead of --images)
    ecgka age prepare imdb-wiki --images DIR --out CSV
    ecgka age pack --csv CSV --images DIR --out DIR
    ecgka age synth --out DIR [--n 1000]                 (also spelt ``ecgka synth-age``)
"""

from __future__ import annotations

from ecgka.cli.options import AgePackOptions, AgePrepareOptions, AgeSynthCommand, Command


def _prepare(o: AgePrepareOptions) -> int:
    from ecgka.age.prepare import prepare_split

    summary = prepare_split(o.dataset, o.out, images=o.images, metadata=o.metadata)
    print(f"wrote {summary['out']}: train {summary['train']}, val {summary['val']}, test {summary['test']}"
          + (f" ({summary['no_split']} rows with an age outside 0-120 left out)" if summary["no_split"] else ""))
    return 0


def _pack(o: AgePackOptions) -> int:
    from ecgka.age.shards import pack_age_shards

    manifest = pack_age_shards(o.csv, o.images, o.out, rows_per_shard=o.rows_per_shard, workers=o.workers,
                               force=o.force)
    counts = manifest["counts"]
    print(f"packed {o.out}: train {counts['train']}, val {counts['val']}, test {counts['test']}, "
          f"skipped {manifest['skipped']} (listed in skipped.csv)")
    return 0


def _synth(o: AgeSynthCommand) -> int:
    summary = o.execute(o.out, force=o.force)
    print(f"stand-in written to {summary['out']}: train {summary['train']}, val {summary['val']}, "
          f"test {summary['test']}\n  use: --csv {summary['csv']} --images {summary['image_root']}")
    return 0


PREPARE = Command(AgePrepareOptions, _prepare)
PACK = Command(AgePackOptions, _pack)
SYNTH = Command(AgeSynthCommand, _synth)
