"""``train_run(cfg, data_dir, run_dir, init=None)``: one training run into a run directory.

Layout (``ecgka.catalog.RunDir``): ``config.yaml`` (resolved), ``run.json``, ``log.jsonl`` (one line per
finished epoch), ``checkpoints/{last,best}.pt``. Re-running on the same directory continues from
``last.pt``; a complete run with the same config is returned as is. Under torchrun only rank 0 writes.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ecgka import __version__
from ecgka.catalog import DatasetDir, RunDir
from ecgka.config import config_to_dict, dump_yaml
from ecgka.errors import ConfigError, InputError
from ecgka.io import atomic_write_json, atomic_write_text, remove_stale_temps
from ecgka.labels import LabelGrid
from ecgka.models import count_parameters, model_kwargs
from ecgka.training.build import (
    Runtime,
    build_criterion,
    build_model,
    build_optimizer,
    make_runtime,
    wrap_network,
)
from ecgka.training.config import TrainConfig
from ecgka.training.distributed import DistInfo, barrier, gather_with_grad, init_distributed, shutdown
from ecgka.training.hooks import CheckpointHook, EpochSummaryHook, ProgressBarHook, make_tensorboard_hook
from ecgka.training.loop import Trainer
from ecgka.training.resume import check_run_dir, load_last
from ecgka.training.shard_loading import SplitData, lead_indices, load_split
from ecgka.training.two_stage import apply_init


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _run_info(cfg: TrainConfig, data: DatasetDir, manifest: dict, status: str, **extra: Any) -> dict[str, Any]:
    return {"name": cfg.name, "method": cfg.method.name, "dist_loss": cfg.method.with_dist_loss,
            "display_name": cfg.method.display_name, "stage": 2 if cfg.init.path else 1,
            "init": cfg.init.path, "init_mode": cfg.init.mode if cfg.init.path else None,
            "dataset_dir": str(data.path), "dataset_fingerprint": manifest.get("fingerprint"),
            "status": status, "selection_metric": cfg.selection_metric, "ecgka_version": __version__,
            "seed": cfg.seed, "group": cfg.group, "ablation": cfg.ablation, "variant": cfg.variant, **extra}


def _prepare_dir(run: RunDir, cfg: TrainConfig, data: DatasetDir, manifest: dict, info: DistInfo) -> dict | None:
    """Check a re-used run dir; write config.yaml. Returns the run.json of a complete run (skip)."""
    check_run_dir(run, cfg)
    old = run.read_run() if run.run_json.is_file() else None
    if old and old.get("dataset_fingerprint") != manifest.get("fingerprint"):
        raise ConfigError(f"{run.path}: was trained on dataset {old.get('dataset_fingerprint')}, "
                          f"{data.path} is {manifest.get('fingerprint')}; use another --out")
    if old and old.get("status") == "complete":
        return old
    if info.main:
        run.checkpoints_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(run.path)
        remove_stale_temps(run.checkpoints_dir)
        atomic_write_text(run.config_path, dump_yaml(config_to_dict(cfg)))
        atomic_write_json(run.run_json, _run_info(cfg, data, manifest, "running", best_epoch=None))
    return None


def _hooks(cfg: TrainConfig, run: RunDir, info: DistInfo) -> list:
    checkpoints = CheckpointHook(run, cfg.checkpoint_every_steps, write=info.main)  # every rank: RNG gather
    if not info.main:
        return [checkpoints]
    hooks = [checkpoints]
    if cfg.progress:
        hooks += [ProgressBarHook(), EpochSummaryHook()]
    tensorboard = make_tensorboard_hook(run) if cfg.tensorboard else None
    return hooks + ([tensorboard] if tensorboard else [])


def train_run(cfg: TrainConfig, data_dir: str | Path, run_dir: str | Path, init: str | Path | None = None
              ) -> dict[str, Any]:
    """Train (or continue, or skip if complete) one run; returns the final ``run.json`` content."""
    model_kwargs(cfg.model.name, cfg.model.preset)  # unknown model or preset: fail before any data is read
    if init is not None:
        cfg = cfg.model_copy(update={"init": cfg.init.model_copy(update={"path": str(init)})})
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    info = init_distributed(make_runtime(cfg).device.type)
    try:
        return _train(cfg, DatasetDir(data_dir), RunDir(run_dir), make_runtime(cfg, info=info), info)
    finally:
        shutdown(info)


def _load_splits(cfg: TrainConfig, data: DatasetDir, run: RunDir, info: DistInfo) -> tuple[SplitData, SplitData]:
    if not info.main:
        barrier(info)  # rank 0 builds the signal caches first
    train, val = (load_split(data.path, s, cache_dir=cfg.data.cache_dir, fallback_cache=run.cache_dir)
                  for s in ("train", "val"))
    if info.main:
        barrier(info)
    return train, val


def _build_trainer(cfg: TrainConfig, manifest: dict, train: SplitData, val: SplitData, runtime: Runtime,
                   info: DistInfo, hooks: list) -> Trainer:
    grid = LabelGrid.from_manifest(manifest)
    leads = lead_indices(train.leads, cfg.data.leads)
    model = build_model(cfg, len(leads))
    if cfg.init.path:
        apply_init(model, cfg.init.path, cfg.init.mode, cfg.init.checkpoint)
    if cfg.head_bias_init == "train_mean" and (not cfg.init.path or cfg.init.mode == "head"):
        with torch.no_grad():
            model.head.bias.fill_(float(np.mean(train.labels)))
    criterion = build_criterion(cfg, train.labels, grid, cfg.batch_size // info.world)
    if cfg.gather_predictions and info.enabled:
        criterion.set_gather(gather_with_grad)
    model.to(runtime.device)
    criterion.to(runtime.device)
    return Trainer(cfg=cfg, model=model, net=wrap_network(model, criterion, runtime, info), criterion=criterion,
                   optimizer=build_optimizer(cfg, model, criterion), train=train, val=val, leads=leads,
                   runtime=runtime, info=info, grid=grid,
                   train_counts=np.asarray(manifest["train_bin_counts"]["counts"]), hooks=hooks)


def check_steps(n_train: int, batch_size: int) -> None:
    """An epoch must have at least one training step (whole batches only): a one-line error otherwise."""
    if n_train < batch_size:
        raise InputError(f"the training split has {n_train} samples, fewer than one batch of {batch_size}: "
                         "an epoch would have no training step; lower batch_size")


def _train(cfg: TrainConfig, data: DatasetDir, run: RunDir, runtime: Runtime, info: DistInfo) -> dict:
    manifest = data.read_manifest()
    n_listed = manifest.get("counts", {}).get("train")
    if isinstance(n_listed, int):  # before any file is written or read
        check_steps(n_listed, cfg.batch_size)
    done = _prepare_dir(run, cfg, data, manifest, info)
    if done is not None:
        return done
    seed_everything(cfg.seed)
    train, val = _load_splits(cfg, data, run, info)
    check_steps(len(train), cfg.batch_size)
    trainer = _build_trainer(cfg, manifest, train, val, runtime, info, _hooks(cfg, run, info))
    if (state := load_last(run)) is not None:
        trainer.restore(state)
    trainer.fit()
    summary = _run_info(cfg, data, manifest, "complete", best_epoch=trainer.best.get("epoch"),
                        best_value=trainer.best.get("value"), epochs_done=trainer.epoch,
                        n_parameters=count_parameters(trainer.model),
                        trainable_parameters=count_parameters(trainer.model, True), world_size=info.world,
                        device=runtime.device.type, n_train=len(train), n_val=len(val))
    if info.main:
        atomic_write_json(run.run_json, summary)
    barrier(info)
    return summary
