"""Predictions of a trained run on a dataset split (used by validation and by ``ecgka evaluate``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from ecgka.errors import InputError
from ecgka.training.checkpoint import load_checkpoint, resolve_weights
from ecgka.training.shard_loading import SplitData, lead_indices, load_split
from ecgka.training.loader import epoch_batches, iterate_batches, to_device
from ecgka.training.step import autocast


@torch.no_grad()
def predict_arrays(model: nn.Module, data: SplitData, leads: list[int], *, batch_size: int = 1024,
                   device: torch.device | str = "cpu", bf16: bool = False, normalise: bool = True,
                   prefetch: int = 2) -> np.ndarray:
    """Predictions [N] in the split's row order, model in eval mode (restored afterwards)."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    batches = epoch_batches(len(data), batch_size, seed=0, epoch=0, shuffle=False, drop_last=False)
    out = []
    try:
        for x, y in iterate_batches(data, batches, leads, prefetch=prefetch, pin_memory=device.type == "cuda"):
            x, _ = to_device(x, y, device, normalise)
            with autocast(device, bf16):
                out.append(model(x).float())  # stays on the device: one copy to the host at the end
    finally:
        model.train(was_training)
    return torch.cat(out).cpu().numpy() if out else np.zeros(0, dtype=np.float32)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("device 'cuda' requested but torch sees no CUDA device (use device=auto or cpu)")
    return torch.device(name)


def load_run_model(run_dir: str | Path, checkpoint: str = "best", device: torch.device | str = "cpu"):
    """(model with the run's weights, its TrainConfig, the run's leads)."""
    from ecgka.training.api import build_model
    from ecgka.training.config import load_train_config

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise InputError(f"{run_dir}: not a training run directory (no config.yaml)")
    cfg = load_train_config(run_dir / "config.yaml")
    state = load_checkpoint(resolve_weights(run_dir, checkpoint))
    n_channels = int(state["in_channels"])
    model = build_model(cfg, n_channels)
    model.load_state_dict(state["model"])
    return model.to(device).eval(), cfg


def predict(run_dir: str | Path, data_dir: str | Path, split: str, checkpoint: str = "best",
            device: str = "auto") -> pd.DataFrame:
    """DataFrame ``sample_id, subject_id, label, prediction`` for ``split`` of ``data_dir``."""
    dev = resolve_device(device)
    model, cfg = load_run_model(run_dir, checkpoint, dev)
    data = load_split(data_dir, split, cache_dir=cfg.data.cache_dir, fallback_cache=Path(run_dir) / "cache")
    leads = lead_indices(data.leads, cfg.data.leads)
    pred = predict_arrays(model, data, leads, batch_size=cfg.data.eval_batch_size, device=dev,
                          bf16=cfg.bf16 and dev.type == "cuda", normalise=cfg.data.zscore)
    return pd.DataFrame({"sample_id": data.sample_ids, "subject_id": data.subject_ids,
                         "label": data.labels.astype(np.float64), "prediction": pred.astype(np.float64)})
