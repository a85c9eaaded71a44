"""The JSON card of a portable model: everything needed to use it without ecgka."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ecgka import __version__
from ecgka.catalog import RunDir
from ecgka.catalog.info import DatasetInfo
from ecgka.errors import InputError
from ecgka.training.shard_loading import ZSCORE_EPS, lead_indices

CARD_SCHEMA_VERSION = 1


def run_dataset(run: RunDir) -> tuple[DatasetInfo, Path]:
    """The description of the dataset the run was trained on (``run.json`` names its folder or file), read
    by its kind under the run's config."""
    from ecgka.training.prediction import run_config
    from ecgka.training.sources import describe_dataset

    data = run.read_run().get("dataset_dir")
    if not data:
        raise InputError(f"{run.run_json}: names no dataset_dir (retrain with this ecgka)")
    return describe_dataset(data, run_config(run.path)), Path(data)


def operating_points(run: RunDir, split: str = "test") -> dict[str, Any]:
    """Detection cut-offs on predicted K fixed on validation (from the run's evaluation), per condition."""
    path = run.metrics_path(split)
    if not path.is_file():
        return {}
    conditions = (run.read_metrics(split).get("clinical") or {}).get("conditions", {})
    return {name: {k: c.get("operating_point", {}).get(k) for k in ("threshold", "rule", "target_sensitivity")}
            | {"definition": c.get("definition"), "fixed_on": "val"} for name, c in conditions.items()}


def dataset_identity(dataset: DatasetInfo) -> dict[str, Any]:
    """The dataset's fingerprint and content digest (the fingerprint when it has none) and its parent."""
    return dataset.identity()


def build_card(run_dir: str | Path, in_channels: int, fmt: str, checkpoint: str = "best") -> dict[str, Any]:
    """The card of ``run_dir``'s model exported as ``fmt``."""
    from ecgka.models import model_kwargs
    from ecgka.training.prediction import run_config

    run, cfg = RunDir(run_dir), run_config(run_dir)
    dataset, data = run_dataset(run)
    signal = dict(dataset.signal or {})
    available = list(signal.get("leads", []))
    leads = [available[i] for i in lead_indices(available, cfg.data.leads)]
    return {
        "schema_version": CARD_SCHEMA_VERSION, "format": fmt, "ecgka_version": __version__,
        "run": {"path": str(run.path.resolve()), "name": cfg.name, "checkpoint": checkpoint},
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
        "dataset": {**dataset_identity(dataset), "path": str(data)},
    }
