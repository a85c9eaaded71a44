"""Shard loading for training and prediction: no per-sample Python on the hot path, bounded memory.

The float16 ``signal`` column of a split is converted once (streamed, shard by shard) into a memory-mapped
``.npy`` cache ``[N, leads, samples]`` beside the shards; batches are then one sorted fancy-index read of
the memmap plus a vectorised per-sample, per-lead z-score. Labels and ids (a few MB) stay in memory.
The cache is keyed by the dataset fingerprint, the split and the shard files, written atomically and
reused. An imbalance variant reads its parent's shards and shares its parent's cache: its train split is
an index map into the parent's memmap (no copy).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from ecgka.catalog import DatasetDir
from ecgka.errors import InputError
from ecgka.io import atomic_path
from ecgka.keys import Col

META_COLUMNS = (Col.SAMPLE_ID.value, Col.SUBJECT_ID.value, Col.POTASSIUM.value)


def _cache_key(manifest: dict, split: str, shards: list[Path]) -> str:
    stats = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in shards]
    blob = json.dumps([manifest.get("fingerprint"), manifest.get("signal"), split, stats], default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _write_signal_cache(shards: list[Path], n_rows: int, width: int, target: Path) -> None:
    """Stream the signal column of every shard into a float16 .npy file (one record batch at a time)."""
    with atomic_path(target) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(n_rows, width))
        row = 0
        for shard in shards:
            for rb in pq.ParquetFile(shard).iter_batches(batch_size=2048, columns=[Col.SIGNAL.value]):
                col = rb.column(0)
                values = col.flatten().to_numpy(zero_copy_only=False)  # respects slice offsets
                if values.size != len(col) * width:
                    raise InputError(f"{shard}: signal has {values.size // max(len(col), 1)} values per row, "
                                     f"manifest says {width}")
                out[row:row + len(col)] = values.reshape(len(col), width).astype(np.float16, copy=False)
                row += len(col)
        out.flush()
        del out


@dataclass
class SplitData:
    """One split: metadata arrays in memory, signals as a read-only memmap [N, leads, samples]."""

    signals: np.ndarray
    labels: np.ndarray
    sample_ids: np.ndarray
    subject_ids: np.ndarray
    leads: list[str]
    rows: np.ndarray | None = None  # row of each sample in ``signals`` (None: row i is sample i)

    def __len__(self) -> int:
        return len(self.labels)


def _read_meta(shards: list[Path]) -> dict[str, np.ndarray]:
    tables = [pq.read_table(s, columns=list(META_COLUMNS)) for s in shards]
    try:
        return {c: np.concatenate([t.column(c).to_numpy() for t in tables]) for c in META_COLUMNS}
    except KeyError as exc:
        raise InputError(f"{shards[0].parent}: shards miss column {exc}") from None


def _cache_dir(default: Path, cache_dir: str | Path | None, fallback: Path | None) -> Path:
    directory = Path(cache_dir) if cache_dir else default
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-probe-"):
            pass  # unique name: concurrent processes (DDP ranks, parallel runs) do not collide
        return directory
    except OSError:
        if fallback is None:
            raise InputError(f"{directory}: cannot write the signal cache; set data.cache_dir") from None
        fallback.mkdir(parents=True, exist_ok=True)
        return fallback


def _signal_shape(ds: DatasetDir, manifest: dict) -> tuple[list[str], int]:
    sig = manifest.get("signal") or {}
    leads, n_samples = list(sig.get("leads", [])), int(sig.get("n_samples", 0))
    if not leads or n_samples <= 0:
        raise InputError(f"{ds.manifest_path}: signal.leads / signal.n_samples missing")
    return leads, n_samples


def _open_cache(source: DatasetDir, split: str, shards: list[Path], n_rows: int, width: int,
                cache_dir: str | Path | None, fallback: Path | None) -> np.ndarray:
    """The memmap of the source's whole ``split`` [n_rows, width], written on first use."""
    key = _cache_key(source.read_manifest(), split, shards)
    target = _cache_dir(source.cache_dir, cache_dir, fallback) / DatasetDir.signal_cache_name(split, key)
    if not target.is_file():
        _write_signal_cache(shards, n_rows, width, target)
    signals = np.load(target, mmap_mode="r")
    if signals.shape[0] != n_rows:
        raise InputError(f"{target}: cache has {signals.shape[0]} rows, shards have {n_rows}; delete the cache")
    return signals


def load_split(data_dir: str | Path, split: str, *, cache_dir: str | Path | None = None,
               fallback_cache: Path | None = None) -> SplitData:
    """Open ``split`` of a dataset directory (or of a variant: its parent's rows minus the ones it drops),
    building the signal cache on first use."""
    ds = DatasetDir(data_dir)
    leads, n_samples = _signal_shape(ds, ds.read_manifest())
    shards = ds.shards(split)
    meta = _read_meta(shards)
    ids = meta[Col.SAMPLE_ID.value].astype(np.int64)
    signals = _open_cache(ds.shard_source, split, shards, len(ids), len(leads) * n_samples, cache_dir,
                          fallback_cache).reshape(-1, len(leads), n_samples)
    dropped = ds.dropped_sample_ids(split)
    rows = np.flatnonzero(~np.isin(ids, dropped)) if dropped.size else None
    keep = slice(None) if rows is None else rows
    return SplitData(signals=signals, labels=meta[Col.POTASSIUM.value][keep].astype(np.float32),
                     sample_ids=ids[keep], subject_ids=meta[Col.SUBJECT_ID.value][keep].astype(np.int64),
                     leads=leads, rows=rows)


def lead_indices(available: list[str], wanted: list[str] | None) -> list[int]:
    if wanted is None:
        return list(range(len(available)))
    missing = [lead for lead in wanted if lead not in available]
    if missing:
        raise InputError(f"data.leads: {', '.join(missing)} not in the dataset (has {', '.join(available)})")
    return [available.index(lead) for lead in wanted]


ZSCORE_EPS = 1e-6  # added to the standard deviation: a flat lead stays 0 (also inside exported models)


def zscore(x: np.ndarray, eps: float = ZSCORE_EPS) -> np.ndarray:
    """Per-sample, per-lead z-score of [B, C, T] float32 (flat leads stay 0)."""
    mean = x.mean(axis=-1, keepdims=True)
    std = x.std(axis=-1, keepdims=True)
    return (x - mean) / (std + eps)


def read_batch(data: SplitData, indices: np.ndarray, leads: list[int], normalise: bool = True
               ) -> tuple[np.ndarray, np.ndarray]:
    """Signals [B, C, T] and labels [B] for ``indices`` (read in sorted order: one pass over the memmap).

    ``normalise``: float32 z-scored here; else the stored float16 (the trainer z-scores on its device,
    which halves the bytes moved and keeps the loader thread to a memory copy).
    """
    order = np.sort(indices)
    x = data.signals[order if data.rows is None else data.rows[order]]
    if len(leads) != x.shape[1]:
        x = x[:, leads]
    return (zscore(x.astype(np.float32)) if normalise else np.ascontiguousarray(x)), data.labels[order]


def zscore_tensor(x: torch.Tensor, eps: float = ZSCORE_EPS) -> torch.Tensor:
    """``zscore`` in torch on the tensor's device (float32 result)."""
    x = x.float()
    mean = x.mean(dim=-1, keepdim=True)
    std = x.std(dim=-1, keepdim=True, unbiased=False)
    return (x - mean) / (std + eps)
