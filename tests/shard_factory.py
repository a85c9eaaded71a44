"""Write a tiny dataset directory that follows the "Dataset directory" contract (docs/contracts.md).

Signals are random noise plus a potassium-dependent component (a smooth bump whose height grows with K),
so that a model can learn something; labels are imbalanced in train (normal values dominate) and
balanced in val/test. Used by the training tests so that they never depend on the build stage.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ecgka.catalog import DATASET_SCHEMA_VERSION, Claim, ClaimState, DatasetDir, FolderKind
from ecgka.data.assemble import LEDGER_COLUMNS
from ecgka.labels import LabelGrid

GRID = LabelGrid.preset("potassium")


def _labels(rng: np.random.Generator, n: int, balanced: bool) -> np.ndarray:
    if balanced:
        y = rng.uniform(2.5, 7.0, n)
    else:
        y = np.clip(rng.normal(4.2, 0.6, n), 2.0, 8.0)
    return np.round(y, 1).astype(np.float32)


def _signals(rng: np.random.Generator, y: np.ndarray, n_leads: int, n_samples: int) -> np.ndarray:
    t = np.linspace(0, 1, n_samples, dtype=np.float32)
    bump = np.exp(-((t - 0.5) ** 2) / 0.005)
    base = np.sin(2 * np.pi * 5 * t)
    sig = rng.normal(0, 0.3, (len(y), n_leads, n_samples)).astype(np.float32) + base
    sig += (y[:, None, None] - 4.0) * bump
    return sig.reshape(len(y), n_leads * n_samples).astype(np.float16)


def _table(rng, split_offset: int, y: np.ndarray, leads: list[str], n_samples: int, fs: int) -> pa.Table:
    n = len(y)
    ids = np.arange(n, dtype=np.int64) + split_offset
    flat = _signals(rng, y, len(leads), n_samples)
    signal = pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel(), type=pa.float16()), flat.shape[1])
    ecg_time = pa.array((1_600_000_000 + ids * 60).astype("datetime64[s]"))
    return pa.table({
        "sample_id": ids, "subject_id": ids // 2 + 10_000_000, "study_id": ids + 40_000_000,
        "ecg_time": ecg_time, "lab_time": ecg_time, "delta_minutes": pa.array(np.zeros(n, np.float32)),
        "itemid": pa.array(np.full(n, 50971, np.int32)), "potassium": pa.array(y),
        "leads": pa.array([",".join(leads)] * n), "fs": pa.array(np.full(n, fs, np.int32)), "signal": signal,
    })


def write_dataset(out_dir: str | Path, n_train: int = 256, n_val: int = 64, n_test: int = 64,
                  n_samples: int = 500, leads: tuple[str, ...] = ("II",), fs: int = 50, seed: int = 0,
                  shard_rows: int = 100) -> Path:
    """Write ``out_dir`` (manifest.json + split=<name>/ shards of ``shard_rows`` rows) and return it."""
    out = Path(out_dir)
    ds = DatasetDir(out)
    rng = np.random.default_rng(seed)
    sizes = {"train": n_train, "val": n_val, "test": n_test}
    hists, offset = {}, 0
    for split, n in sizes.items():
        y = _labels(rng, n, balanced=split != "train")
        table = _table(rng, offset, y, list(leads), n_samples, fs)
        ds.split_dir(split).mkdir(parents=True, exist_ok=True)
        for part, start in enumerate(range(0, n, shard_rows)):
            pq.write_table(table.slice(start, shard_rows), ds.split_dir(split) / ds.shard_name(part),
                           compression="zstd")
        hists[split] = {"lo": GRID.lo, "step": GRID.step, "counts": GRID.counts(y).tolist()}
        offset += 1_000_000
    train_counts = hists["train"]["counts"]
    manifest = {
        "schema_version": DATASET_SCHEMA_VERSION, "ecgka_version": "test",
        "fingerprint": f"factory-{seed}-{n_train}-{n_samples}", "parent": None, "config": {"factory": True},
        "inputs": {}, "signal": {"leads": list(leads), "fs": fs, "n_samples": n_samples, "unit": "mV",
                                 "layout": "lead-major", "dtype": "float16", "cleaning": {"clean": False}},
        "label": GRID.to_dict(),
        "counts": {"record_list": sum(sizes.values()), **sizes, "excluded": 0},
        "exclusions": {}, "labs_dropped": {}, "label_histograms": hists,
        "train_bin_counts": hists["train"], "n_max": int(max(train_counts)),
        "shot_groups": GRID.shot_groups(train_counts), "variants": [],
    }
    ds.exclusions_path.write_text(",".join(LEDGER_COLUMNS) + "\n")  # nothing excluded
    ds.manifest_path.write_text(json.dumps(manifest, indent=2))
    Claim(out, FolderKind.DATASET, ClaimState.NEW).write_marker(manifest["fingerprint"])
    return out


def train_tiny(root: str | Path, n_val: int = 32) -> tuple[Path, Path]:
    """A one-epoch run of the small Net1D (CPU, one thread) on a :func:`write_dataset` dataset under ``root``:
    (run folder, dataset folder)."""
    import torch

    from ecgka.training import TrainConfig, train_run

    torch.set_num_threads(1)
    root = Path(root)
    data = write_dataset(root / "data", n_train=128, n_val=n_val, n_test=32, n_samples=250)
    cfg = TrainConfig.model_validate({"name": "tiny", "model": {"preset": "small"}, "epochs": 1,
                                      "batch_size": 32, "device": "cpu", "progress": False, "threads": 1})
    train_run(cfg, data, root / "run")
    return root / "run", data
