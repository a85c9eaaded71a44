"""Training: ``train_run`` (one run into a run directory) and ``predict`` (a split with a trained run)."""

from __future__ import annotations

from typing import Any

__all__ = ["TrainConfig", "load_train_config", "predict", "train_run"]


def __getattr__(name: str) -> Any:  # lazy: importing ecgka.training does not import torch
    if name == "train_run":
        from ecgka.training.api import train_run

        return train_run
    if name == "predict":
        from ecgka.training.prediction import predict

        return predict
    if name in ("TrainConfig", "load_train_config"):
        from ecgka.training import config

        return getattr(config, name)
    raise AttributeError(f"module 'ecgka.training' has no attribute {name!r}")
