"""Where training, validation and prediction read their samples: a registry of dataset kinds.

A kind is detected from ``--data`` (:func:`detect_kind`) and gives two things:

- ``describe(path, cfg) -> dict``: the dataset description the trainer, ``ecgka evaluate`` and the report
  read (the keys of an ECG-Ka-DIR manifest they use: ``fingerprint``, ``label``, ``counts``,
  ``train_bin_counts``, ``n_max``, ``shot_groups``, ``label_histograms``); for ECG it is the manifest;
- ``open(path, split, cfg, fallback_cache) -> SplitSource``: one split for batches.

A :class:`SplitSource` has ``len``, ``labels`` (float32), ``sample_ids``, ``subject_ids``, ``in_channels``,
``device_zscore`` (whether the trainer z-scores its batches per sample and channel on the device),
``batch(indices, train, generator) -> (x, y)`` CPU tensors (augmentation drawn from ``generator``) and
``bad_files()`` (a table of files left out, or None when the kind has no files to skip).

Kinds: ``ecg-ka-dir`` (a dataset folder of ``ecgka build``: the memory-mapped signal cache), ``age-csv``
(a DIR split CSV ``age,path,split`` whose image root is ``data.image_root`` or the CSV's folder) and
``age-images`` (a folder packed by ``ecgka age pack``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ecgka.catalog import DatasetDir
from ecgka.catalog.age import AGE_IMAGES_KIND, AgeImageDir
from ecgka.keys import SPLITS
from ecgka.labels import LabelGrid
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
    describe: Callable[[Path, Any], dict]
    open: Callable[[Path, str, Any, Path | None], SplitSource]
    fallback: bool = False  # tried after every other kind


DATA_KINDS: NameTable[DataKind] = NameTable("dataset kind")


def detect_kind(path: str | Path) -> str:
    """The name of the kind that recognises ``path``; the fallback kind (ECG-Ka-DIR) last."""
    path = Path(path)
    names = sorted(DATA_KINDS.names(), key=lambda name: DATA_KINDS.get(name).fallback)
    return next(name for name in names if DATA_KINDS.get(name).detects(path))


def describe_dataset(path: str | Path, cfg: Any) -> dict:
    """The dataset description (see the module docstring) of ``path`` under training config ``cfg``."""
    kind = detect_kind(path)
    return {**DATA_KINDS.get(kind).describe(Path(path), cfg), "kind": kind}


def open_split(path: str | Path, split: str, cfg: Any, fallback_cache: Path | None = None) -> SplitSource:
    """Split ``split`` of ``path`` as a :class:`SplitSource` (``cfg``: the run's TrainConfig)."""
    return DATA_KINDS.get(detect_kind(path)).open(Path(path), split, cfg, fallback_cache)


def uses_device_zscore(source: SplitSource, cfg: Any) -> bool:
    """Whether batches of ``source`` are z-scored on the device (``data.zscore`` and a kind that wants it)."""
    return bool(cfg.data.zscore and source.device_zscore)


class _SplitOf:
    """What every split kind reads from the data it wraps (``self.data``): its length, labels and ids."""

    data: Any

    def __len__(self) -> int:
        return len(self.data)

    @property
    def labels(self) -> np.ndarray:
        return self.data.labels

    @property
    def sample_ids(self) -> np.ndarray:
        return self.data.sample_ids

    @property
    def subject_ids(self) -> np.ndarray:
        return self.data.subject_ids


# ---- ECG-Ka-DIR ------------------------------------------------------------------------------------------

@dataclass
class EcgSplit(_SplitOf):
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


# ---- face age ------------------------------------------------------------------------------------------

@dataclass
class AgeSplit(_SplitOf):
    """A split of face images (``ecgka.age.AgeDataset``): float32 normalised images, no device z-score."""

    data: Any  # ecgka.age.AgeDataset
    in_channels = 3
    device_zscore = False

    def batch(self, indices: np.ndarray, train: bool = False, generator: Any = None):
        return self.data.batch(np.sort(indices), train, generator)

    def bad_files(self):
        return self.data.bad_files()


def _transform(cfg: Any):
    from ecgka.age.transforms import AgeTransform

    return AgeTransform(size=cfg.data.image_size, padding=cfg.data.image_padding)


def image_root(csv: Path, cfg: Any) -> Path:
    """``data.image_root``, or the folder of the split CSV."""
    return Path(cfg.data.image_root) if cfg.data.image_root else csv.parent


def _open_age_csv(path: Path, split: str, cfg: Any, fallback: Path | None) -> AgeSplit:
    from ecgka.age.dataset import open_age_split

    return AgeSplit(open_age_split(path, image_root(path, cfg), split, transform=_transform(cfg),
                                   workers=cfg.data.workers))


def _open_age_images(path: Path, split: str, cfg: Any, fallback: Path | None) -> AgeSplit:
    from ecgka.age.shards import open_age_shards

    return AgeSplit(open_age_shards(path, split, transform=_transform(cfg), workers=cfg.data.workers))


def age_description(labels: dict[str, np.ndarray], fingerprint: str, source: dict) -> dict:
    """The dataset description of age labels per split: the age grid (0-120, step 1, absolute shot rule),
    training counts per integer age, shot groups and per-split histograms."""
    grid = LabelGrid.preset("age")
    counts = grid.counts(labels.get("train", np.zeros(0, np.float32)))
    hist = {s: {"lo": grid.lo, "step": grid.step, "counts": grid.counts(v).tolist()} for s, v in labels.items()}
    return {"fingerprint": fingerprint, "label": grid.to_dict(), "source": source,
            "counts": {s: int(len(labels.get(s, ()))) for s in SPLITS},
            "train_bin_counts": {"lo": grid.lo, "step": grid.step, "counts": counts.tolist()},
            "n_max": int(counts.max(initial=0)), "shot_groups": grid.shot_groups(counts),
            "label_histograms": hist}


def _describe_age_csv(path: Path, cfg: Any) -> dict:
    """Labels from the CSV's rows (every row, readable or not); fingerprint: a digest of the CSV's bytes."""
    from ecgka.age.table import read_split_table
    from ecgka.io import file_fingerprint

    table = read_split_table(path)
    labels = {s: table.loc[table["split"] == s, "age"].to_numpy(np.float32) for s in SPLITS}
    digest = file_fingerprint(path)["sha256"]
    return age_description(labels, digest[:16], {"csv": str(path), "image_root": str(image_root(path, cfg))})


def _describe_age_images(path: Path, cfg: Any) -> dict:
    """Labels from the packed shards; fingerprint: the packed CSV's digest (the pack's manifest)."""
    import pyarrow.parquet as pq

    folder = AgeImageDir(path)
    manifest = folder.read_manifest()
    labels = {s: np.concatenate([pq.read_table(p, columns=["age"]).column(0).to_numpy() for p in
                                 folder.shards(s)]).astype(np.float32)
              for s in SPLITS if manifest.get("counts", {}).get(s)}
    digest = str(manifest.get("source", {}).get("sha256", ""))
    return age_description(labels, digest[:16], {"packed": str(path), "csv": manifest.get("source", {}).get("csv")})


def _is_age_pack(path: Path) -> bool:
    manifest = AgeImageDir(path).manifest_path
    if not manifest.is_file():
        return False
    try:
        return json.loads(manifest.read_text()).get("kind") == AGE_IMAGES_KIND
    except (OSError, ValueError, AttributeError):
        return False


def _describe_ecg(path: Path, cfg: Any) -> dict:
    return DatasetDir(path).read_manifest()


DATA_KINDS.register("age-csv")(DataKind(lambda p: p.suffix.lower() == ".csv" and not p.is_dir(),
                                        _describe_age_csv, _open_age_csv))
DATA_KINDS.register("age-images")(DataKind(_is_age_pack, _describe_age_images, _open_age_images))
DATA_KINDS.register("ecg-ka-dir")(DataKind(lambda p: True, _describe_ecg, _open_ecg, fallback=True))
