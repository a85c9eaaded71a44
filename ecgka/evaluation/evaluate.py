"""``ecgka evaluate``: predict a split with a trained run and write its few-shot and clinical metrics.

Writes ``RUN/eval/<split>/predictions.parquet`` (sample_id, subject_id, label, prediction) and
``RUN/eval/<split>/metrics.json`` (written last, atomically: its presence means the evaluation is complete).
Detection operating points are fixed on the validation split, so evaluating ``test`` also predicts ``val``
(kept as ``RUN/eval/val/predictions.parquet``). The shot groups use the training bin counts of the dataset
manifest, and metrics.json records them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ecgka import __version__
from ecgka.config import ConfigModel
from ecgka.errors import InputError
from ecgka.evaluation import aggregates
from ecgka.io import atomic_path, atomic_write_json, read_json
from ecgka.keys import SPLITS
from ecgka.metrics.clinical import CONDITIONS, clinical_metrics
from ecgka.metrics.shots import assign_groups, resolve_cuts, shot_metrics_from_counts

SCHEMA_VERSION = 1
PREDICTION_COLUMNS = ("sample_id", "subject_id", "label", "prediction")
DATASET_KEYS = ("fingerprint", "schema_version", "ecgka_version", "label", "signal", "counts", "exclusions",
                "labs_dropped", "label_histograms", "train_bin_counts", "n_max", "shot_groups", "config")
RUN_KEYS = ("name", "display_name", "method", "dist_loss", "stage", "init", "dataset_fingerprint",
            "best_epoch", "selection_metric", "seed", "group", "ablation", "variant", "status")


class EvalConfig(ConfigModel):
    """Options of ``ecgka evaluate`` (all overridable as key=value)."""

    checkpoint: str = "best"
    shot_rule: str = "relative"
    many: float | None = None  # default of the rule: 0.5 (relative) or 100 (absolute)
    few: float | None = None  # default of the rule: 0.15 (relative) or 20 (absolute)
    target_sensitivity: float = 0.9
    n_boot: int = 1000
    seed: int = 0
    calibration_width: float = 0.5


def read_manifest(data_dir: str | Path) -> dict:
    path = Path(data_dir) / "manifest.json"
    if not path.is_file():
        raise InputError(f"{path}: dataset manifest not found (is --data a dataset directory?)")
    manifest = read_json(path)
    for key in ("label", "train_bin_counts"):
        if key not in manifest:
            raise InputError(f"{path}: missing key {key!r}")
    return manifest


def read_run_json(run_dir: str | Path) -> dict:
    path = Path(run_dir) / "run.json"
    if not path.is_file():
        raise InputError(f"{path}: not found (is {run_dir} a run directory?)")
    return read_json(path)


def check_predictions(df: pd.DataFrame, source: str) -> pd.DataFrame:
    """The four prediction columns, finite labels and predictions; a one-line InputError otherwise."""
    missing = [c for c in PREDICTION_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(f"{source}: missing columns {', '.join(missing)}")
    df = df.loc[:, list(PREDICTION_COLUMNS)].reset_index(drop=True)
    for col in ("label", "prediction"):
        bad = ~np.isfinite(df[col].to_numpy(dtype=np.float64))
        if bad.any():
            raise InputError(f"{source}: column {col} has {int(bad.sum())} non-finite values")
    if df.empty:
        raise InputError(f"{source}: no rows")
    return df


def _clean(obj: Any) -> Any:
    """JSON-safe copy: NaN/inf become null, numpy scalars become Python numbers."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def dataset_summary(manifest: dict) -> dict:
    """The manifest's aggregate fields (counts, histograms, shot groups, config): no per-record data."""
    return {k: manifest[k] for k in DATASET_KEYS if k in manifest}


def _figure_aggregates(labels, preds, groups, label_info: dict) -> dict:
    lo, hi, width = float(label_info["lo"]), float(label_info["hi"]), float(label_info["bin_width"])
    err = preds - labels
    mean = (preds + labels) / 2.0
    return {
        "distributions": aggregates.distributions(labels, preds, lo, hi, width),
        "few_shot_error_curve": aggregates.sorted_error_curve(np.abs(err[groups == "few"])),
        "scatter_density": aggregates.density_2d(labels, preds, (lo, hi), (lo, hi), width),
        "bland_altman_density": aggregates.density_2d(mean, err, (lo, hi), (-3.0, 3.0), width),
        "roc": {name: aggregates.roc_points(c.positive(labels), c.score(preds))
                for name, c in CONDITIONS.items()},
    }


def compute_metrics(test: pd.DataFrame, val: pd.DataFrame, manifest: dict, cfg: EvalConfig | None = None,
                    split: str = "test") -> dict:
    """All metrics of one evaluated split, from prediction tables and the dataset manifest (pure)."""
    cfg = cfg or EvalConfig()
    test = check_predictions(test, f"{split} predictions")
    val = check_predictions(val, "val predictions")
    label_info, counts_info = manifest["label"], manifest["train_bin_counts"]
    lo, width = float(counts_info["lo"]), float(counts_info["bin_width"])
    counts = np.asarray(counts_info["counts"], dtype=np.int64)
    labels = test["label"].to_numpy(np.float64)
    preds = test["prediction"].to_numpy(np.float64)
    many, few = resolve_cuts(cfg.shot_rule, cfg.many, cfg.few)
    groups = assign_groups(labels, counts, lo, width, cfg.shot_rule, many, few)
    metrics = {
        "schema_version": SCHEMA_VERSION,
        "ecgka_version": __version__,
        "split": split,
        "n": int(len(test)),
        "n_subjects": int(test["subject_id"].nunique()),
        "operating_point_split": "val",
        "config": cfg.model_dump(mode="json"),
        "shots": {"rule": cfg.shot_rule, "many": many, "few": few, "n_max": int(counts.max(initial=0)),
                  "train_bin_counts": {"lo": lo, "bin_width": width, "counts": counts.tolist()},
                  "n_per_group": {g: int(np.sum(groups == g)) for g in ("many", "median", "few")}},
        "regression": shot_metrics_from_counts(preds, labels, counts, lo, width, cfg.shot_rule, many, few),
        "clinical": clinical_metrics(
            labels, preds, test["subject_id"].to_numpy(), val["label"].to_numpy(np.float64),
            val["prediction"].to_numpy(np.float64), cfg.target_sensitivity, cfg.n_boot, cfg.seed,
            cfg.calibration_width, float(label_info.get("lo", lo))),
        "figures": _figure_aggregates(labels, preds, groups, {"bin_width": width, "lo": lo, **label_info}),
        "dataset": dataset_summary(manifest),
    }
    return _clean(metrics)


def _predict(run_dir: Path, data_dir: Path, split: str, checkpoint: str) -> pd.DataFrame:
    from ecgka.training import predict  # lazy: torch and the model zoo load only when predicting

    return check_predictions(predict(run_dir, data_dir, split, checkpoint=checkpoint),
                             f"{run_dir} predictions of {split}")


def _write_parquet(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def evaluate_run(run_dir: str | Path, data_dir: str | Path, split: str = "test",
                 cfg: EvalConfig | None = None) -> dict:
    """Predict ``split`` (and val) with the run's checkpoint, write predictions and metrics.json."""
    cfg = cfg or EvalConfig()
    run_dir, data_dir = Path(run_dir), Path(data_dir)
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r} (valid: {', '.join(SPLITS)})")
    run = read_run_json(run_dir)
    manifest = read_manifest(data_dir)
    preds = {s: _predict(run_dir, data_dir, s, cfg.checkpoint) for s in dict.fromkeys(("val", split))}
    for s, df in preds.items():
        _write_parquet(df, run_dir / "eval" / s / "predictions.parquet")
    metrics = compute_metrics(preds[split], preds["val"], manifest, cfg, split)
    metrics["run"] = _clean({k: run.get(k) for k in RUN_KEYS if k in run})
    metrics["checkpoint"] = cfg.checkpoint
    trained_on = run.get("dataset_fingerprint")
    metrics["dataset"]["matches_training"] = None if trained_on is None else trained_on == manifest.get("fingerprint")
    atomic_write_json(run_dir / "eval" / split / "metrics.json", metrics)
    return metrics
