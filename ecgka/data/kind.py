"""The ECG-Ka-DIR dataset kind: a folder written by ``ecgka build`` (or one of its imbalance variants).

Its description is its ``manifest.json`` read as a :class:`ecgka.catalog.info.DatasetInfo` (label grid,
histograms, counts, signal block, lineage). It is the fallback kind: any ``--data`` no other kind
recognises is read as a dataset folder, whose manifest then says what is wrong. Batches of it come from
the trainer's signal cache (``ecgka.training.shard_loading``).
"""

from __future__ import annotations

from pathlib import Path

from ecgka.catalog import DatasetDir
from ecgka.catalog.info import ECG_KIND, DatasetInfo

KIND = ECG_KIND


def detects(path: Path) -> bool:
    """Every path: the fallback kind, tried after the others."""
    return True


def describe(path: str | Path) -> DatasetInfo:
    """The dataset folder's manifest as a description (a missing or old manifest: one line)."""
    folder = DatasetDir(path)
    return DatasetInfo.from_dict(folder.read_manifest(), KIND, what=str(folder.manifest_path))
