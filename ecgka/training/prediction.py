"""Predictions of a trained run on a dataset split (used by validation and by ``ecgka evaluate``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from ecgka.catalog import RunDir, resolve_weights
from ecgka.errors import InputError
from ecgka.keys import PredCol
from ecgka.training.build import Runtime, build_model, make_runtime
from ecgka.training.checkpoint import load_checkpoint
from ecgka.training.config import TrainConfig, read_resolved_config
from ecgka.training.loader import epoch_batches, iterate_batches, to_device
from ecgka.training.sources import SplitSource, open_split, uses_device_zscore
from ecgka.training.step import head_forward


@contextlib.contextmanager
def full_fp32_matmul() -> Iterator[None]:
    """TF32 off for CUDA matmuls and convolutions inside the block (restored after): predictions and
    validation metrics are float32-exact, so they match the CPU's within float32 rounding (no-op on the CPU)."""
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    old = matmul.allow_tf32, cudnn.allow_tf32
    matmul.allow_tf32 = cudnn.allow_tf32 = False
    try:
        yield
    finally:
        matmul.allow_tf32, cudnn.allow_tf32 = old


@torch.no_grad()
def predict_arrays(model: nn.Module, data: SplitSource, runtime: Runtime, *,
                   batch_size: int = 1024, normalise: bool = True, prefetch: int = 2) -> np.ndarray:
    """Predictions [N] (float32) in the split's row order, model in eval mode (restored afterwards), TF32
    off; under ``runtime.bf16`` the backbone runs in bf16 and the head in float32 (``head_forward``).
    ``normalise``: z-score on the device."""
    was_training = model.training
    model.eval()
    batches = epoch_batches(len(data), batch_size, seed=0, epoch=0, shuffle=False, drop_last=False)
    out = []
    try:
        with full_fp32_matmul():
            for x, y in iterate_batches(data, batches, prefetch=prefetch, pin_memory=runtime.pin_memory):
                x, _ = to_device(x, y, runtime.device, normalise)
                out.append(head_forward(model, x, runtime.amp_device))  # on the device: one copy at the end
    finally:
        model.train(was_training)
    return torch.cat(out).cpu().numpy() if out else np.zeros(0, dtype=np.float32)


def run_config(run_dir: str | Path) -> TrainConfig:
    """The resolved TrainConfig of a run directory."""
    run = RunDir(run_dir)
    if not run.is_run():
        raise InputError(f"{run.path}: not a training run directory (no {run.CONFIG})")
    return read_resolved_config(run.config_path)


def load_weights(run_dir: str | Path, cfg: TrainConfig, checkpoint: str, device: torch.device | str) -> nn.Module:
    """The run's model with the weights of its ``checkpoint`` ("best" or "last"), in eval mode."""
    state = load_checkpoint(resolve_weights(run_dir, checkpoint))
    model = build_model(cfg, int(state["in_channels"]))
    model.load_state_dict(state["model"])
    return model.to(device).eval()


def load_run_model(run_dir: str | Path, checkpoint: str = "best", device: torch.device | str = "cpu"
                   ) -> tuple[nn.Module, TrainConfig]:
    """(model with the run's weights, its TrainConfig)."""
    cfg = run_config(run_dir)
    return load_weights(run_dir, cfg, checkpoint, device), cfg


def predict(run_dir: str | Path, data_dir: str | Path, split: str, checkpoint: str = "best",
            device: str | None = None) -> pd.DataFrame:
    """DataFrame ``sample_id, subject_id, label, prediction`` for ``split`` of ``data_dir``.

    ``device``: ``auto``, ``cpu`` or ``cuda``; None uses the run's own configured device (and bf16).
    """
    cfg = run_config(run_dir)
    runtime = make_runtime(cfg, device)
    model = load_weights(run_dir, cfg, checkpoint, runtime.device)
    data = open_split(data_dir, split, cfg, fallback_cache=RunDir(run_dir).cache_dir)
    pred = predict_arrays(model, data, runtime, batch_size=cfg.data.eval_batch_size,
                          normalise=uses_device_zscore(data, cfg))
    return pd.DataFrame({PredCol.SAMPLE_ID.value: data.sample_ids, PredCol.SUBJECT_ID.value: data.subject_ids,
                         PredCol.LABEL.value: data.labels.astype(np.float64),
                         PredCol.PREDICTION.value: pred.astype(np.float64)})
