"""The run folder (``RunDir``) and checkpoint resolution."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ecgka.catalog._files import _read_json_file
from ecgka.errors import InputError


class RunDir:
    """A training run folder."""

    CONFIG = "config.yaml"
    RUN = "run.json"
    LOG = "log.jsonl"
    CHECKPOINTS = "checkpoints"
    CHECKPOINT_NAMES = ("best", "last")
    EVAL = "eval"
    PREDICTIONS = "predictions.parquet"
    METRICS = "metrics.json"
    CACHE = "cache"
    TENSORBOARD = "tensorboard"
    BAD_FILES = "bad_files.csv"  # image files left out of training (split, sample_id, path, reason)
    UNCERTAINTY = "uncertainty.json"  # the conformal layer fitted on val (``ecgka.metrics.conformal``)

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @property
    def config_path(self) -> Path:
        return self.path / self.CONFIG

    @property
    def run_json(self) -> Path:
        return self.path / self.RUN

    @property
    def log_path(self) -> Path:
        return self.path / self.LOG

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / self.CHECKPOINTS

    def checkpoint(self, which: str = "best") -> Path:
        if which not in self.CHECKPOINT_NAMES:
            raise InputError(f"unknown checkpoint {which!r} (valid: {', '.join(self.CHECKPOINT_NAMES)})")
        return self.checkpoints_dir / f"{which}.pt"

    @property
    def cache_dir(self) -> Path:
        return self.path / self.CACHE

    @property
    def bad_files_path(self) -> Path:
        return self.path / self.BAD_FILES

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / self.TENSORBOARD

    @property
    def uncertainty(self) -> Path:
        """``uncertainty.json``: the fitted conformal layer (``LabelConditionalCPS`` JSON; its ``source``
        records the checkpoint SHA-256 and dataset fingerprint it was fitted from)."""
        return self.path / self.UNCERTAINTY

    def read_uncertainty(self) -> dict[str, Any] | None:
        """The fitted conformal layer as JSON (None: the run has none yet; ``ecgka evaluate`` fits it)."""
        if not self.uncertainty.is_file():
            return None
        return _read_json_file(self.uncertainty, "uncertainty.json", f"run `ecgka evaluate {self.path}` again")

    def eval_dir(self, split: str, dataset: str | None = None) -> Path:
        """``eval/<split>`` (the run's own dataset), or ``eval/<fingerprint>/<split>`` for an evaluation on
        another dataset (``ecgka evaluate --allow-other-dataset``)."""
        return self.path / self.EVAL / (f"{dataset}/{split}" if dataset else split)

    def predictions_path(self, split: str, dataset: str | None = None) -> Path:
        return self.eval_dir(split, dataset) / self.PREDICTIONS

    def metrics_path(self, split: str, dataset: str | None = None) -> Path:
        return self.eval_dir(split, dataset) / self.METRICS

    def is_run(self) -> bool:
        return self.config_path.is_file()

    def read_run(self) -> dict[str, Any]:
        return _read_json_file(self.run_json, "run.json", f"is {self.path} a run directory?")

    def read_metrics(self, split: str, dataset: str | None = None) -> dict[str, Any]:
        hint = (f"run `ecgka evaluate {self.path} --data DIR --allow-other-dataset` first" if dataset
                else f"run `ecgka evaluate {self.path} --data DIR` first")
        return _read_json_file(self.metrics_path(split, dataset), "metrics.json", hint)

    def read_config(self) -> dict[str, Any]:
        """The resolved config.yaml as a mapping ({} when absent)."""
        import yaml

        if not self.config_path.is_file():
            return {}
        try:
            return yaml.safe_load(self.config_path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise InputError(f"{self.config_path}: not valid YAML ({str(exc).splitlines()[0]})") from None

    def read_log(self) -> list[dict[str, Any]]:
        """The per-epoch log (one JSON object per line); [] when absent."""
        if not self.log_path.is_file():
            return []
        rows = []
        for i, line in enumerate(self.log_path.read_text().splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    raise InputError(f"{self.log_path}: line {i} is not valid JSON") from None
        return rows


def resolve_weights(path: str | Path, which: str = "best") -> Path:
    """A checkpoint file, or a run directory (its ``which`` checkpoint)."""
    path = Path(path)
    if path.is_dir():
        path = RunDir(path).checkpoint(which)
    if not path.is_file():
        raise InputError(f"{path}: checkpoint not found (expected a run directory or a .pt file)")
    return path
