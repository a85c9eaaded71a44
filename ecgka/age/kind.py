"""The face-image dataset kinds: ``age-csv`` (a DIR split CSV ``age,path,split`` with its image root) and
``age-images`` (a folder packed by ``ecgka age pack``).

Each kind detects its ``--data``, describes it as a :class:`ecgka.catalog.info.DatasetInfo` on the age
grid (``LabelGrid.preset("age")``: 0-120 years, step 1, absolute shot rule) and opens a split as an
:class:`AgeSplit` for the trainer. Their options are :class:`ImageOptions` (``data.image`` of a training
config).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ecgka.age.options import ImageOptions  # noqa: F401 - re-exported: the kind's options
from ecgka.catalog.age import AGE_IMAGES_KIND, AgeImageDir
from ecgka.catalog.info import DatasetInfo, SplitOf
from ecgka.keys import SPLITS
from ecgka.labels import LabelGrid

CSV_KIND = "age-csv"
IMAGES_KIND = AGE_IMAGES_KIND


@dataclass
class AgeSplit(SplitOf):
    """A split of face images (``ecgka.age.AgeDataset``): float32 normalised images, no device z-score."""

    data: Any  # ecgka.age.AgeDataset
    in_channels = 3
    device_zscore = False

    def batch(self, indices: np.ndarray, train: bool = False, generator: Any = None):
        return self.data.batch(np.sort(indices), train, generator)

    def bad_files(self):
        return self.data.bad_files()


def image_root(csv: Path, options: ImageOptions) -> Path:
    """``options.root``, or the folder of the split CSV."""
    return Path(options.root) if options.root else Path(csv).parent


def _transform(options: ImageOptions):
    from ecgka.age.transforms import AgeTransform

    return AgeTransform(size=options.size, padding=options.padding)


def describe_labels(kind: str, labels: dict[str, np.ndarray], fingerprint: str, source: dict,
                    options: ImageOptions | None = None) -> DatasetInfo:
    """The description of age labels per split (a split without labels counts 0) on the age grid; with
    ``options.train_ages_above_grid: top_bin`` training ages above the grid count in its last bin."""
    empty = np.zeros(0, np.float32)
    grid = LabelGrid.preset("age")
    labels = {s: labels.get(s, empty) for s in SPLITS}
    if options is not None and options.train_ages_above_grid == "top_bin":
        labels["train"] = np.minimum(labels["train"], np.float32(grid.hi))
    return DatasetInfo.from_labels(kind, grid, labels, fingerprint, source=source)


# ---- age-csv ---------------------------------------------------------------------------------------------

def is_split_csv(path: Path) -> bool:
    return path.suffix.lower() == ".csv" and not path.is_dir()


def describe_csv(path: Path, options: ImageOptions) -> DatasetInfo:
    """Labels from the CSV's rows (every row, readable or not); fingerprint: a digest of the CSV's bytes."""
    from ecgka.age.table import read_split_table
    from ecgka.io import file_fingerprint

    table = read_split_table(path)
    labels = {s: table.loc[table["split"] == s, "age"].to_numpy(np.float32) for s in SPLITS}
    digest = file_fingerprint(path)["sha256"]
    return describe_labels(CSV_KIND, labels, digest[:16],
                           {"csv": str(path), "image_root": str(image_root(path, options))}, options)


def open_csv(path: Path, split: str, options: ImageOptions) -> AgeSplit:
    from ecgka.age.dataset import open_age_split

    return AgeSplit(open_age_split(path, image_root(path, options), split, transform=_transform(options),
                                   workers=options.workers))


# ---- age-images ------------------------------------------------------------------------------------------

def is_pack(path: Path) -> bool:
    manifest = AgeImageDir(path).manifest_path
    if not manifest.is_file():
        return False
    try:  # the pack's own manifest names its folder kind (a wrong version is refused when it is read)
        return json.loads(manifest.read_text()).get("kind") == AGE_IMAGES_KIND
    except (OSError, ValueError, AttributeError):
        return False


def describe_pack(path: Path, options: ImageOptions) -> DatasetInfo:
    """Labels from the packed shards; fingerprint: the packed CSV's digest (the pack's manifest)."""
    import pyarrow.parquet as pq

    folder = AgeImageDir(path)
    manifest = folder.read_manifest()
    labels = {s: np.concatenate([pq.read_table(p, columns=["age"]).column(0).to_numpy() for p in
                                 folder.shards(s)]).astype(np.float32)
              for s in SPLITS if manifest.get("counts", {}).get(s)}
    source = manifest.get("source", {})
    return describe_labels(IMAGES_KIND, labels, str(source.get("sha256", ""))[:16],
                           {"packed": str(path), "csv": source.get("csv")}, options)


def open_pack(path: Path, split: str, options: ImageOptions) -> AgeSplit:
    from ecgka.age.shards import open_age_shards

    return AgeSplit(open_age_shards(path, split, transform=_transform(options), workers=options.workers))
