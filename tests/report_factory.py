"""Small fake dataset manifests and evaluated run directories for the metrics and report tests.

The files follow docs/contracts.md ("Dataset directory", "Run directory") and are named by ``ecgka.catalog``;
metrics.json is computed by the real ``ecgka.evaluation.compute_metrics`` from synthetic predictions.
Subject ids are 8-digit numbers like MIMIC's, so the privacy tests can search for them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from ecgka.catalog import DATASET_SCHEMA_VERSION, DatasetDir, RunDir
from ecgka.catalog.info import DatasetInfo
from ecgka.evaluation import EvalConfig, compute_metrics
from ecgka.io import atomic_write_json
from ecgka.labels import LabelGrid, ShotRule

GRID = LabelGrid.preset("potassium")
FINGERPRINT = "fp0123abcd"
FAKE_DATE = "2180-07-23"  # a MIMIC-style shifted date that must never reach a report


def _labels(rng, n: int, balanced: bool) -> np.ndarray:
    if balanced:
        k = rng.uniform(2.0, 7.5, n)
    else:
        k = np.concatenate([rng.normal(4.1, 0.45, int(n * 0.9)), rng.uniform(1.8, 8.5, n - int(n * 0.9))])
    return np.round(np.clip(k, 1.8, 8.5), 1).astype(np.float32)


def _histogram(grid: LabelGrid, labels) -> dict:
    return {"lo": grid.lo, "step": grid.step, "counts": grid.counts(labels).tolist()}


def fake_manifest(data_dir: Path, seed: int = 0, n_train: int = 3000, variant: str | None = None,
                  shots: ShotRule | None = None) -> dict:
    """Write the dataset manifest of ``data_dir`` (a train histogram of ``n_train`` labels) and return it."""
    rng = np.random.default_rng(seed)
    grid = GRID if shots is None else GRID.with_shots(shots)
    train = _labels(rng, n_train, balanced=False)
    counts = grid.counts(train)
    hist = {s: _histogram(grid, _labels(rng, 400, True)) for s in ("val", "test")}
    manifest = {
        "schema_version": DATASET_SCHEMA_VERSION, "ecgka_version": "0.1.0",
        "fingerprint": FINGERPRINT,  # a variant carries its parent's fingerprint (same val/test)
        "parent": None,
        "config": {"pairing": {"window_minutes": [-60, 60]}, "leads": ["II"], "seed": 0},
        "inputs": {"record_list": {"size": 123, "sha256": "ab" * 32}},
        "signal": {"leads": ["II"], "fs": 500, "n_samples": 5000, "unit": "mV"},
        "label": grid.to_dict(),
        "counts": {"record_list": n_train + 1000, "train": n_train, "val": 400, "test": 400, "excluded": 200},
        "exclusions": {"no_lab_in_window": 150, "flat_lead": 30, "nan_samples": 20},
        "labs_dropped": {"haemolysed": 12, "implausible": 3},
        "label_histograms": {"train": _histogram(grid, train), **hist},
        "train_bin_counts": _histogram(grid, train),
        "n_max": int(counts.max()),
        "shot_groups": grid.shot_groups(counts),
        "variants": [],
    }
    atomic_write_json(DatasetDir(data_dir).manifest_path, manifest)
    return manifest


def fake_predictions(seed: int, n: int = 400, shrink: float = 0.5, noise: float = 0.3,
                     n_subjects: int = 120) -> pd.DataFrame:
    """Balanced labels; predictions pulled toward 4.2 by ``shrink`` (a vanilla-like bias) plus noise."""
    rng = np.random.default_rng(seed)
    labels = _labels(rng, n, balanced=True)
    subject = 10_000_000 + 7919 * rng.integers(1, n_subjects + 1, n)
    pred = labels + shrink * (4.2 - labels) + rng.normal(0, noise, n)
    return pd.DataFrame({"sample_id": np.arange(n, dtype=np.int64) + 1000 * seed, "subject_id": subject,
                         "label": labels, "prediction": pred.astype(np.float32)})


def make_run(root: Path, name: str, manifest: dict, method: str = "vanilla", dist_loss: bool = False,
             shrink: float = 0.5, seed: int = 1, n_boot: int = 200, extra: dict | None = None,
             epoch_seconds=(12.5, 11.0, 11.5)) -> Path:
    """An evaluated run directory: run.json, config.yaml, log.jsonl, eval/{val,test}/*, metrics.json."""
    run_dir = RunDir(root / name)
    run = {"name": name, "method": method, "dist_loss": dist_loss, "stage": 2 if dist_loss else 1,
           "init": None, "dataset_dir": "data/ecg-ka-dir", "dataset_fingerprint": manifest["fingerprint"],
           "status": "complete", "best_epoch": 2, "selection_metric": "val_balanced_mae",
           "ecgka_version": "0.1.0", "seed": seed, "created": FAKE_DATE, **(extra or {})}
    atomic_write_json(run_dir.run_json, run)
    run_dir.config_path.write_text(yaml.safe_dump({"method": {"name": method}, "train": {"epochs": 3}}))
    log = [{"epoch": i, "lr": 1e-3, "train_loss": 1.0 / (i + 1), "seconds": s, "samples_per_s": 3000 / s,
            "time": f"{FAKE_DATE} 10:0{i}:00"} for i, s in enumerate(epoch_seconds)]
    run_dir.log_path.write_text("\n".join(json.dumps(x) for x in log) + "\n")
    test = fake_predictions(seed, shrink=shrink)
    val = fake_predictions(seed + 100, shrink=shrink)
    for split, df in (("test", test), ("val", val)):
        run_dir.eval_dir(split).mkdir(parents=True, exist_ok=True)
        df.to_parquet(run_dir.predictions_path(split), index=False)
    metrics = compute_metrics(test, val, DatasetInfo.from_dict(manifest), EvalConfig(n_boot=n_boot))
    metrics["run"] = {k: run[k] for k in ("name", "method", "dist_loss", "stage", "seed")}
    atomic_write_json(run_dir.metrics_path("test"), metrics)
    return run_dir.path
