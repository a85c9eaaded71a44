"""The dataset folder (``DatasetDir``) and its build work folder (``WorkDir``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ecgka.catalog._files import _read_json_file
from ecgka.errors import InputError
from ecgka.keys import SPLITS

DATASET_SCHEMA_VERSION = 3  # 3: stable, fair splits (salted subject hashes, home bins); checksum and duplicate-lead rules
SHARD_GLOB = "part-*.parquet"


class DatasetDir:
    """An ECG-Ka-DIR dataset folder (or an imbalance variant of one)."""

    MANIFEST = "manifest.json"
    EXCLUSIONS = "exclusions.csv"
    # the version's potassium rows (Arrow IPC, not Parquet: outside the shard glob): a later version
    # (`ecgka build --previous DIR`) starts from them, never from the old export files
    LABS = "labs.arrow"
    CACHE = ".cache"
    WORK = "_work"
    VARIANTS = "variants"
    SPLIT_PREFIX = "split="
    # what pandas/pyarrow ParquetDataset readers must skip to read DIR as one dataset (they lack DuckDB's glob
    # and pyarrow.dataset's exclude_invalid_files): pd.read_parquet(DIR, ignore_prefixes=READER_IGNORE_PREFIXES)
    READER_IGNORE_PREFIXES = (".", "_", "manifest", "exclusions", "labs", "variants")

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"DatasetDir({str(self.path)!r})"

    # --- file names -------------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.path / self.MANIFEST

    @property
    def exclusions_path(self) -> Path:
        return self.path / self.EXCLUSIONS

    @property
    def labs_path(self) -> Path:
        return self.path / self.LABS

    @property
    def cache_dir(self) -> Path:
        return self.path / self.CACHE

    @property
    def work_root(self) -> Path:
        return self.path / self.WORK

    def work_dir(self, fingerprint: str) -> Path:
        return self.work_root / fingerprint

    def work(self, fingerprint: str) -> WorkDir:
        return WorkDir(self.work_dir(fingerprint))

    def split_dir(self, split: str) -> Path:
        return self.path / f"{self.SPLIT_PREFIX}{split}"

    @staticmethod
    def shard_name(index: int) -> str:
        return f"part-{index:05d}.parquet"

    @staticmethod
    def signal_cache_name(split: str, key: str) -> str:
        """The memory-mapped signal cache of ``split`` (in ``cache_dir`` or a configured folder)."""
        return f"{split}-{key}.npy"

    @property
    def variants_dir(self) -> Path:
        return self.path / self.VARIANTS

    def variant(self, name: str) -> DatasetDir:
        return DatasetDir(self.variants_dir / name)

    # --- reading ----------------------------------------------------------------------------------
    def read_manifest(self) -> dict[str, Any]:
        """The manifest; a missing, unreadable or old-layout one is a one-line InputError."""
        manifest = _read_json_file(self.manifest_path, "dataset manifest",
                                   f"is {self.path} a dataset directory? run `ecgka build` first")
        version = manifest.get("schema_version")
        if version != DATASET_SCHEMA_VERSION:
            raise InputError(f"{self.path}: dataset layout version {version}, this ecgka reads version "
                             f"{DATASET_SCHEMA_VERSION}; rebuild it with `ecgka build`")
        return manifest

    def manifest_or_none(self) -> dict[str, Any] | None:
        """The manifest if one of this layout is there, else None (an unfinished or foreign folder)."""
        try:
            return self.read_manifest()
        except InputError:
            return None

    def is_complete(self, fingerprint: str) -> bool:
        """A finished build of the same data: matching manifest, ledger and every split folder."""
        manifest = self.manifest_or_none()
        if manifest is None or manifest.get("fingerprint") != fingerprint:
            return False
        folders = [self.split_dir(s) for s in SPLITS] + [self.variant(v).manifest_path
                                                         for v in manifest.get("variants", [])]
        return self.exclusions_path.is_file() and all(p.exists() for p in folders)

    @property
    def shard_source(self) -> DatasetDir:
        """The folder whose shards this dataset reads (a variant reads its parent's)."""
        manifest = self.read_manifest()
        variant = manifest.get("variant")
        if variant:
            return DatasetDir((self.path / variant.get("parent", "../..")).resolve())
        return self

    def shards(self, split: str) -> list[Path]:
        """The shard files of ``split``, in order (a variant's are its parent's)."""
        source = self.shard_source
        shards = sorted(source.split_dir(split).glob(SHARD_GLOB))
        if not shards:
            raise InputError(f"{source.path}: split {split!r} has no shards "
                             f"({source.split_dir(split).name}/{SHARD_GLOB})")
        return shards

    def ledgers(self) -> list[Path]:
        """The exclusion ledgers that apply to this dataset (a variant adds its own to its parent's)."""
        source = self.shard_source
        own = [self.exclusions_path]
        return own if source is self else [*source.ledgers(), *own]

    def read_exclusions(self):
        """The whole exclusion ledger as a DataFrame (row, subject_id, study_id, path, reason, detail)."""
        import pandas as pd

        frames = [pd.read_csv(p, dtype={"path": str, "reason": str, "detail": str}, keep_default_na=False)
                  for p in self.ledgers()]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def dropped_sample_ids(self, split: str):
        """Sample ids of the source's ``split`` that this dataset leaves out (a variant's own ledger)."""
        import numpy as np
        import pandas as pd

        if split != "train" or self.shard_source is self:
            return np.empty(0, np.int64)
        return pd.read_csv(self.exclusions_path, usecols=["row"])["row"].to_numpy(np.int64)


class WorkDir:
    """The resumable parts of one build (``DIR/_work/<fingerprint>/``): the lab table and one folder per
    signal chunk, written as Arrow IPC files (never ``.parquet``, so a kept work folder stays out of the
    shard glob)."""

    CHUNKS = "chunks"
    ROWS = "rows.arrow"
    EXCLUDED = "excluded.arrow"
    LABS = "labs.arrow"
    LAB_STATS = "labs.json"

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def chunks_dir(self) -> Path:
        return self.path / self.CHUNKS

    def chunk(self, index: int) -> Path:
        return self.chunks_dir / f"chunk-{index:05d}"

    @classmethod
    def rows(cls, chunk: Path) -> Path:
        return Path(chunk) / cls.ROWS

    @classmethod
    def excluded(cls, chunk: Path) -> Path:
        return Path(chunk) / cls.EXCLUDED

    @property
    def labs(self) -> Path:
        return self.path / self.LABS

    @property
    def lab_stats(self) -> Path:
        return self.path / self.LAB_STATS
