"""A packed age-image folder (``ecgka age pack``): the file names, and one way to read its manifest.

    DIR/manifest.json                    kind "age-images", version, counts, label grid (written last)
    DIR/split=train/part-00000.parquet   columns sample_id, age, path, image (the file's encoded bytes)
    DIR/split=val/...  DIR/split=test/...
    DIR/skipped.csv                      split, sample_id, path, reason: files left out when packing

Same hive layout and shard names as a dataset folder (:class:`DatasetDir`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ecgka.catalog._files import _read_json_file
from ecgka.catalog.dataset import SHARD_GLOB, DatasetDir
from ecgka.errors import InputError

AGE_IMAGES_KIND = "age-images"
AGE_IMAGES_VERSION = 1


class AgeImageDir:
    """Parquet shards of encoded face images with their ages, one folder per split."""

    SKIPPED = "skipped.csv"

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._layout = DatasetDir(self.path)

    @property
    def manifest_path(self) -> Path:
        return self._layout.manifest_path

    @property
    def skipped_path(self) -> Path:
        return self.path / self.SKIPPED

    def split_dir(self, split: str) -> Path:
        return self._layout.split_dir(split)

    shard_name = staticmethod(DatasetDir.shard_name)

    def shards(self, split: str) -> list[Path]:
        shards = sorted(self.split_dir(split).glob(SHARD_GLOB))
        if not shards:
            raise InputError(f"{self.path}: split {split!r} has no shards ({self.split_dir(split).name}/{SHARD_GLOB})")
        return shards

    def read_manifest(self) -> dict[str, Any]:
        manifest = _read_json_file(self.manifest_path, "age image manifest",
                                   f"is {self.path} a folder written by `ecgka age pack`?")
        if manifest.get("kind") != AGE_IMAGES_KIND or manifest.get("version") != AGE_IMAGES_VERSION:
            raise InputError(f"{self.manifest_path}: not an {AGE_IMAGES_KIND} manifest of version "
                             f"{AGE_IMAGES_VERSION}; pack it again with `ecgka age pack`")
        return manifest
