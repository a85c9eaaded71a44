"""``train_run(cfg, data_dir, run_dir, init=None)``: one training run into a run directory.

Layout (docs/contracts.md "Run directory"): ``config.yaml`` (resolved), ``run.json``, ``log.jsonl`` (one
line per finished epoch), ``checkpoints/{last,best}.pt``. Re-running on the same directory continues
from ``last.pt``; a complete run with the same config is returned as is. Under torchrun only rank 0
writes.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ecgka import __version__
from ecgka.config import config_to_dict, dump_yaml
from ecgka.io import atomic_write_json, atomic_write_text, read_json, remove_stale_temps
from ecgka.losses import create_loss, list_losses
from ecgka.models import count_parameters, create_model, model_kwargs
from ecgka.registry import look_up_option
from ecgka.training.config import TrainConfig
from ecgka.training.shard_loading import lead_indices, load_split, read_manifest
from ecgka.training.distributed import DistInfo, barrier, gather_with_grad, init_distributed, shutdown
from ecgka.training.loop import EpochSummaryHook, Trainer
from ecgka.training.prediction import resolve_device
from ecgka.training.resume import CheckpointHook, check_run_dir, load_last, restore
from ecgka.training.step import FeatureModel
from ecgka.training.two_stage import apply_init


def check_names(cfg: TrainConfig) -> None:
    """Fail early (before any data is read) on an unknown method, model or preset name."""
    look_up_option(cfg.method.name, list_losses(), "method")
    model_kwargs(cfg.model.name, cfg.model.preset)


def build_model(cfg: TrainConfig, in_channels: int) -> torch.nn.Module:
    return create_model(cfg.model.name, preset=cfg.model.preset, in_channels=in_channels, num_outputs=1,
                        **cfg.model.overrides)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def method_labels(cfg: TrainConfig) -> dict[str, Any]:
    name = cfg.method.name
    with_dist = name == "dist_loss" or cfg.method.dist_loss is not None
    return {"method": name, "dist_loss": with_dist, "display_name": cfg.method.display_name}


def build_criterion(cfg: TrainConfig, train_labels: np.ndarray, manifest: dict, batch_rows: int):
    label = manifest.get("label", {})
    dist = None if cfg.method.dist_loss is None else cfg.method.dist_loss.model_dump()
    label_range = (float(label.get("lo", 1.5)), float(label.get("hi", 10.0)), float(label.get("bin_width", 0.1)))
    return create_loss(cfg.method.name, train_labels=train_labels, label_range=label_range,
                       batch_size=batch_rows, dist_loss=dist, **cfg.method.params)


def build_optimizer(cfg: TrainConfig, model: torch.nn.Module, criterion: torch.nn.Module) -> torch.optim.Optimizer:
    """Adam over the trainable model parameters (scheduled) plus the criterion's own groups (not)."""
    groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": cfg.optim.lr,
               "base_lr": cfg.optim.lr, "scheduled": True}]
    groups += [{**g, "base_lr": g.get("lr", cfg.optim.lr), "scheduled": False} for g in criterion.param_groups()]
    return torch.optim.Adam(groups, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)


def _wrap(model: torch.nn.Module, criterion, cfg: TrainConfig, device: torch.device, info: DistInfo):
    net: torch.nn.Module = FeatureModel(model, criterion.transform_features)
    if info.enabled:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile and device.type == "cuda":
        net = torch.compile(net)
    return net


def _hooks(cfg: TrainConfig, run_dir: Path, info: DistInfo) -> list:
    hooks = [CheckpointHook(run_dir, enabled=info.main)]
    return hooks + [EpochSummaryHook()] if cfg.progress and info.main else hooks


def _run_info(cfg: TrainConfig, data_dir: Path, manifest: dict, status: str, **extra: Any) -> dict[str, Any]:
    return {"name": cfg.name, **method_labels(cfg), "stage": 2 if cfg.init.path else 1,
            "init": cfg.init.path, "init_mode": cfg.init.mode if cfg.init.path else None,
            "dataset_dir": str(data_dir), "dataset_fingerprint": manifest.get("fingerprint"),
            "status": status, "selection_metric": cfg.selection_metric, "ecgka_version": __version__,
            "seed": cfg.seed, "group": cfg.group, "ablation": cfg.ablation, "variant": cfg.variant, **extra}


def _prepare_dir(run_dir: Path, cfg: TrainConfig, data_dir: Path, manifest: dict, info: DistInfo) -> dict | None:
    """Check a re-used run dir; write config.yaml. Returns the run.json of a complete run (skip)."""
    check_run_dir(run_dir, cfg)
    run_json = run_dir / "run.json"
    old = read_json(run_json) if run_json.is_file() else None
    if old and old.get("dataset_fingerprint") != manifest.get("fingerprint"):
        from ecgka.errors import ConfigError

        raise ConfigError(f"{run_dir}: was trained on dataset {old.get('dataset_fingerprint')}, "
                          f"{data_dir} is {manifest.get('fingerprint')}; use another --out")
    if old and old.get("status") == "complete":
        return old
    if info.main:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        remove_stale_temps(run_dir)
        remove_stale_temps(run_dir / "checkpoints")
        atomic_write_text(run_dir / "config.yaml", dump_yaml(config_to_dict(cfg)))
        atomic_write_json(run_json, _run_info(cfg, data_dir, manifest, "running", best_epoch=None))
    return None


def train_run(cfg: TrainConfig, data_dir: str | Path, run_dir: str | Path, init: str | Path | None = None
              ) -> dict[str, Any]:
    """Train (or continue, or skip if complete) one run; returns the final ``run.json`` content."""
    data_dir, run_dir = Path(data_dir), Path(run_dir)
    check_names(cfg)
    if init is not None:
        cfg = cfg.model_copy(update={"init": cfg.init.model_copy(update={"path": str(init)})})
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    info = init_distributed(device.type)
    try:
        return _train(cfg, data_dir, run_dir, device, info)
    finally:
        shutdown(info)


def _train(cfg: TrainConfig, data_dir: Path, run_dir: Path, device: torch.device, info: DistInfo) -> dict:
    if device.type == "cuda" and info.enabled:
        device = torch.device("cuda", info.local_rank)
    manifest = read_manifest(data_dir)
    done = _prepare_dir(run_dir, cfg, data_dir, manifest, info)
    if done is not None:
        return done
    seed_everything(cfg.seed)
    fallback = run_dir / "cache"
    if not info.main:
        barrier(info)  # rank 0 builds the signal caches first
    train = load_split(data_dir, "train", cache_dir=cfg.data.cache_dir, fallback_cache=fallback)
    val = load_split(data_dir, "val", cache_dir=cfg.data.cache_dir, fallback_cache=fallback)
    if info.main:
        barrier(info)
    leads = lead_indices(train.leads, cfg.data.leads)
    model = build_model(cfg, len(leads))
    if cfg.init.path:
        apply_init(model, cfg.init.path, cfg.init.mode, cfg.init.checkpoint)
    if cfg.head_bias_init == "train_mean" and (not cfg.init.path or cfg.init.mode == "head"):
        with torch.no_grad():
            model.head.bias.fill_(float(np.mean(train.labels)))
    per_rank = cfg.batch_size // info.world
    criterion = build_criterion(cfg, train.labels, manifest, per_rank)
    if cfg.gather_predictions and info.enabled:
        criterion.set_gather(gather_with_grad)
    model.to(device)
    criterion.to(device)
    optimizer = build_optimizer(cfg, model, criterion)
    trainer = Trainer(cfg=cfg, model=model, net=_wrap(model, criterion, cfg, device, info), criterion=criterion,
                      optimizer=optimizer, train=train, val=val, leads=leads, device=device, info=info,
                      manifest=manifest, hooks=_hooks(cfg, run_dir, info))
    if (state := load_last(run_dir)) is not None:
        restore(trainer, state)
    trainer.fit()
    summary = _run_info(cfg, data_dir, manifest, "complete", best_epoch=trainer.best.get("epoch"),
                        best_value=trainer.best.get("value"), epochs_done=trainer.epoch,
                        n_parameters=count_parameters(model), trainable_parameters=count_parameters(model, True),
                        world_size=info.world, device=device.type, n_train=len(train), n_val=len(val))
    if info.main:
        atomic_write_json(run_dir / "run.json", summary)
    barrier(info)
    return summary
