"""Where training, validation and prediction read their samples: the name table of dataset kinds.

A kind is detected from ``--data`` (:func:`detect_kind`) and gives two things:

- ``describe(path, cfg) -> DatasetInfo`` (``ecgka.catalog.info``): the dataset description the trainer,
  ``ecgka evaluate``, the report and the model store read;
- ``open(path, split, cfg, fallback_cache) -> SplitSource``: one split for batches.

A :class:`SplitSource` has ``len``, ``labels`` (float32), ``sample_ids``, ``subject_ids``, ``in_channels``,
``device_zscore`` (whether the trainer z-scores its batches per sample and channel on the device),
``batch(indices, train, generator) -> (x, y)`` CPU tensors (augmentation drawn from ``generator``) and
``bad_files()`` (a table of files left out, or None when the kind has no files to skip).

The kinds live beside their own code: ``ecg-ka-dir`` (``ecgka.data.kind``: a dataset folder of ``ecgka
build``; its batches come from this package's memory-mapped signal cache), ``age-csv`` and ``age-images``
(``ecgka.age.kind``: a DIR split CSV with ``data.image.root``, or a folder packed by ``ecgka age pack``).
This module only fills the table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ecgka.age import kind as age_kind
from ecgka.catalog.info import DatasetInfo, SplitOf
from ecgka.data import kind as ecg_kind
from ecgka.names import NameTable


class SplitSource(Protocol):
    labels: np.ndarray
    sample_ids: np.ndarray
    subject_ids: np.ndarray
    in_channels: int
    device_zscore: bool

    def __len__(self) -> int: ...

    def batch(self, indices: np.ndarray, train: bool, generator: Any = None) -> tuple[Any, Any]: ...

    def bad_files(self) -> Any: ...


@dataclass(frozen=True)
class DataKind:
    """One dataset kind: how to recognise it, describe it and open a split of it."""

    detects: Callable[[Path], bool]
    describe: Callable[[Path, Any], DatasetInfo]
    open: Callable[[Path, str, Any, Path | None], SplitSource]
    fallback: bool = False  # tried after every other kind


DATA_KINDS: NameTable[DataKind] = NameTable("dataset kind")


def detect_kind(path: str | Path) -> str:
    """The name of the kind that recognises ``path``; the fallback kind (ECG-Ka-DIR) last."""
    path = Path(path)
    names = sorted(DATA_KINDS.names(), key=lambda name: DATA_KINDS.get(name).fallback)
    return next(name for name in names if DATA_KINDS.get(name).detects(path))


def describe_dataset(path: str | Path, cfg: Any) -> DatasetInfo:
    """The description of the dataset at ``path`` under training config ``cfg`` (its kind's ``describe``)."""
    return DATA_KINDS.get(detect_kind(path)).describe(Path(path), cfg)


def open_split(path: str | Path, split: str, cfg: Any, fallback_cache: Path | None = None) -> SplitSource:
    """Split ``split`` of ``path`` as a :class:`SplitSource` (``cfg``: the run's TrainConfig)."""
    return DATA_KINDS.get(detect_kind(path)).open(Path(path), split, cfg, fallback_cache)


def uses_device_zscore(source: SplitSource, cfg: Any) -> bool:
    """Whether batches of ``source`` are z-scored on the device (``data.zscore`` and a kind that wants it)."""
    return bool(cfg.data.zscore and source.device_zscore)


# ---- ECG-Ka-DIR ------------------------------------------------------------------------------------------

@dataclass
class EcgSplit(SplitOf):
    """A split of an ECG dataset with its lead selection: float16 batches, z-scored on the device."""

    data: Any  # shard_loading.SplitData
    leads: list[int]
    normalise: bool = False  # z-score on the CPU (float32) instead of on the device
    device_zscore = True

    @property
    def in_channels(self) -> int:
        return len(self.leads)

    def batch(self, indices: np.ndarray, train: bool = False, generator: Any = None):
        import torch

        from ecgka.training.shard_loading import read_batch

        x, y = read_batch(self.data, indices, self.leads, self.normalise)
        return torch.from_numpy(x), torch.from_numpy(np.ascontiguousarray(y))

    def bad_files(self) -> None:
        return None


def _open_ecg(path: Path, split: str, cfg: Any, fallback: Path | None) -> EcgSplit:
    from ecgka.training.shard_loading import lead_indices, load_split

    data = load_split(path, split, cache_dir=cfg.data.cache_dir, fallback_cache=fallback)
    return EcgSplit(data, lead_indices(data.leads, cfg.data.leads))


# ---- the table ----------------------------------------------------------------------------------------

DATA_KINDS.register(age_kind.CSV_KIND)(DataKind(
    age_kind.is_split_csv, lambda p, cfg: age_kind.describe_csv(p, cfg.data.image),
    lambda p, split, cfg, fallback: age_kind.open_csv(p, split, cfg.data.image)))
DATA_KINDS.register(age_kind.IMAGES_KIND)(DataKind(
    age_kind.is_pack, lambda p, cfg: age_kind.describe_pack(p, cfg.data.image),
    lambda p, split, cfg, fallback: age_kind.open_pack(p, split, cfg.data.image)))
DATA_KINDS.register(ecg_kind.KIND)(DataKind(ecg_kind.detects, lambda p, cfg: ecg_kind.describe(p), _open_ecg,
                                            fallback=True))
