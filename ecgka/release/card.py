"""The JSON card of a portable model: everything needed to use it without ecgka."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ecgka import __version__
from ecgka.catalog import RunDir, resolve_weights
from ecgka.catalog.info import DatasetInfo
from ecgka.errors import InputError
from ecgka.io import sha256_file
from ecgka.training.shard_loading import ZSCORE_EPS, lead_indices

CARD_SCHEMA_VERSION = 3  # 2: registry, model (SHA-256s), metrics, intended_use; 3: uncertainty

INTENDED_USE = {
    "purpose": "research use only: estimate serum potassium (mmol/L) from a 12-lead ECG",
    "not_for": "not a diagnostic device; not for clinical decisions. Every estimate must be confirmed by a "
               "laboratory potassium measurement",
    "population": "adults in the ECG-Ka-DIR population (MIMIC-IV-ECG ECGs paired with MIMIC-IV lab potassium); "
                  "performance outside that population is unknown",
    "input": "a 12-lead ECG cleaned as `preprocessing` says, leads in the order of `input.leads`",
}


def run_dataset(run: RunDir) -> tuple[DatasetInfo, Path]:
    """The description of the dataset the run was trained on (``run.json`` names its folder or file), read
    by its kind under the run's config."""
    from ecgka.training.prediction import run_config
    from ecgka.training.sources import describe_dataset

    data = run.read_run().get("dataset_dir")
    if not data:
        raise InputError(f"{run.run_json}: names no dataset_dir (retrain with this ecgka)")
    path = Path(data)
    if not path.is_absolute():  # a run of an older ecgka recorded the path as given to `ecgka train`
        path = path.resolve()
    return describe_dataset(path, run_config(run.path)), path


def operating_points(run: RunDir, split: str = "test") -> dict[str, Any]:
    """Detection cut-offs on predicted K fixed on validation (from the run's evaluation), per condition."""
    path = run.metrics_path(split)
    if not path.is_file():
        return {}
    conditions = (run.read_metrics(split).get("clinical") or {}).get("conditions", {})
    return {name: {k: c.get("operating_point", {}).get(k) for k in ("threshold", "rule", "target_sensitivity")}
            | {"definition": c.get("definition"), "fixed_on": "val"} for name, c in conditions.items()}


def _get(tree: Any, dotted: str) -> Any:
    for key in dotted.split("."):
        tree = tree.get(key) if isinstance(tree, dict) else None
    return tree


def test_metrics(run: RunDir) -> dict[str, Any] | None:
    """The card's summary of the run's test evaluation: overall and few-shot MAE, and per condition the
    sensitivity and specificity on test at the operating point fixed on validation (None: not evaluated)."""
    if not run.metrics_path("test").is_file():
        return None
    metrics = run.read_metrics("test")
    conditions = _get(metrics, "clinical.conditions") or {}
    return {"split": "test", "n": metrics.get("n"), "n_subjects": metrics.get("n_subjects"),
            "checkpoint_sha256": _get(metrics, "model.checkpoint_sha256"),
            "mae": {group: _get(metrics, f"regression.{group}.mae") for group in ("all", "many", "median", "few")},
            "clinical": {name: {k: _get(c, f"operating_point.test.{k}") for k in ("sensitivity", "specificity")}
                         for name, c in conditions.items()}}


def run_layer_json(run: RunDir, checkpoint_sha256: str) -> dict[str, Any] | None:
    """The run's conformal layer (JSON) for these weights: its ``uncertainty.json`` when fitted from them (or
    recording no checkpoint); else fitted now, as ``ecgka evaluate`` fits it (``fit_for_dataset``), from the
    val predictions of its test evaluation of these weights (the ones its operating points came from); else
    None (never evaluated with them)."""
    import pandas as pd

    from ecgka.keys import PredCol
    from ecgka.metrics.conformal import fit_for_dataset, layer_from_json

    data = run.read_uncertainty()
    if data is not None and layer_from_json(data, str(run.uncertainty)).source.get("checkpoint_sha256") in (
            None, checkpoint_sha256):
        return data
    path = run.predictions_path("val")
    if not path.is_file() or not run.metrics_path("test").is_file() or \
            _get(run.read_metrics("test"), "model.checkpoint_sha256") != checkpoint_sha256:
        return None
    try:
        val = pd.read_parquet(path, columns=[PredCol.LABEL.value, PredCol.PREDICTION.value])
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"{path}: unreadable val predictions ({str(exc).splitlines()[0]}); run ecgka evaluate "
                         "again") from None
    dataset = run_dataset(run)[0]
    labels = val[PredCol.LABEL.value].to_numpy(np.float64)
    layer = fit_for_dataset(dataset, labels, val[PredCol.PREDICTION.value].to_numpy(np.float64),
                            source={"split": "val", "n": int(labels.size), "checkpoint_sha256": checkpoint_sha256,
                                    "dataset_fingerprint": dataset.fingerprint, "seed": 0,
                                    "fitted_by": "card (the run had no uncertainty.json of these weights)"})
    return layer.model_dump(mode="json")


def uncertainty_block(run: RunDir, checkpoint_sha256: str) -> dict[str, Any] | None:
    """The card's ``uncertainty``: the run's conformal layer (:func:`run_layer_json`, fitted on validation)
    with its formula and the note on merged ranges, so a consumer of the export alone reproduces
    ``ecgka predict``'s interval and probability columns. None when the run has no layer of these weights."""
    from ecgka.metrics.conformal import layer_from_json

    data = run_layer_json(run, checkpoint_sha256)
    if data is None:
        return None
    layer = layer_from_json(data, str(run.uncertainty))
    return {"method": layer.method, "fitted_on": layer.source.get("split", "val"), "levels": layer.levels,
            "columns": [*layer.column_names, *layer.set_column_names], "merged": layer.merge_note(), "formula": layer.formula,
            "layer": layer.model_dump(mode="json")}


def dataset_identity(dataset: DatasetInfo) -> dict[str, Any]:
    """The dataset's fingerprint and content digest (the fingerprint when it has none) and its parent."""
    return dataset.identity()


def build_card(run_dir: str | Path, in_channels: int, fmt: str, checkpoint: str = "best", *,
               registry: dict[str, Any] | None = None) -> dict[str, Any]:
    """The card of ``run_dir``'s model exported as ``fmt``; ``registry``: the registry version it belongs to
    (``{"path", "version", "origin_run"}``). ``model.file_sha256`` is added by the exporter."""
    from ecgka.models import model_kwargs
    from ecgka.training.prediction import run_config

    run, cfg = RunDir(run_dir), run_config(run_dir)
    dataset, data = run_dataset(run)
    signal = dict(dataset.signal or {})
    available = list(signal.get("leads", []))
    leads = [available[i] for i in lead_indices(available, cfg.data.leads)]
    checkpoint_sha256 = sha256_file(resolve_weights(run.path, checkpoint))
    return {
        "schema_version": CARD_SCHEMA_VERSION, "format": fmt, "ecgka_version": __version__,
        "intended_use": INTENDED_USE,
        "registry": registry,
        "run": {"path": str(run.path.resolve()), "name": cfg.name, "checkpoint": checkpoint},
        "model": {"checkpoint_sha256": checkpoint_sha256},
        "metrics": test_metrics(run),
        "architecture": {"name": cfg.model.name, "preset": cfg.model.preset, "in_channels": in_channels,
                         "num_outputs": 1, "settings": model_kwargs(cfg.model.name, cfg.model.preset,
                                                                     **cfg.model.overrides)},
        "input": {"shape": ["batch", len(leads), "time"], "dtype": "float32", "unit": signal.get("unit", "mV"),
                  "leads": leads, "fs": signal.get("fs"), "n_samples": signal.get("n_samples"),
                  "time_axis": "dynamic (any length; trained at n_samples)"},
        "output": {"shape": ["batch"], "quantity": dataset.grid.name, "unit": dataset.unit},
        "preprocessing": {"in_model": {"zscore": {"per": "sample and lead", "std": "population",
                                                  "eps": ZSCORE_EPS} if cfg.data.zscore else None},
                          "before_model": {"cleaning": signal.get("cleaning"), "stored_dtype": signal.get("dtype"),
                                           "layout": signal.get("layout")}},
        "label_grid": dataset.grid.to_dict(),
        "operating_points": operating_points(run),
        "uncertainty": uncertainty_block(run, checkpoint_sha256),
        "dataset": {**dataset_identity(dataset), "path": str(data.resolve())},
    }
