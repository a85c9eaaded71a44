"""Training: ``train_run`` (one run into a run directory) and ``predict`` (a split with a trained run).

Re-exported lazily: importing ``ecgka.training`` (or validating a training config) does not import torch.
"""

from __future__ import annotations

from ecgka.lazy import lazy_exports

_EXPORTS = {
    "TrainConfig": "ecgka.training.config",
    "load_train_config": "ecgka.training.config",
    "predict": "ecgka.training.prediction",
    "train_run": "ecgka.training.api",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
