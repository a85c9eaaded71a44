"""``train_run(cfg, data_dir, run_dir, init=None, *, force=False, log=None)``: one run into a run folder.

Layout (``ecgka.catalog.RunDir``): ``config.yaml`` (resolved), ``run.json``, ``log.jsonl`` (one line per
finished epoch), ``checkpoints/{last,best}.pt``. What happens to an existing folder (skip, resume, extend,
replace, refuse) is ``resume.plan_run``; a run that stops records ``failed``/``interrupted`` and the reason
in ``run.json``. Under torchrun only rank 0 writes.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ecgka import __version__
from ecgka.catalog import RunDir
from ecgka.catalog.info import DatasetInfo
from ecgka.config import config_hash, config_to_dict, dump_yaml
from ecgka.errors import InputError
from ecgka.io import atomic_write_json, atomic_write_text, remove_stale_temps
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
from ecgka.training.mlflow_mirror import make_mlflow_hook, require_mlflow
from ecgka.training.resume import (
    RUN_COMPLETE,
    RUN_RUNNING,
    Action,
    comparable,
    load_last,
    plan_run,
    record_failure,
)
from ecgka.training.sources import SplitSource, describe_dataset, open_split
from ecgka.training.two_stage import apply_init
from ecgka.training.views import training_views


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def init_dataset(cfg: TrainConfig, dataset: DatasetInfo) -> dict[str, Any]:
    """The stage-1 run's training dataset (``init_dataset_fingerprint``; None for a bare checkpoint file,
    whose origin is unknown); a run trained on another dataset is refused unless
    ``init.allow_other_dataset``. Read-only: called before the run folder is touched."""
    if not cfg.init.path:
        return {}
    path = Path(cfg.init.path)
    stage1 = RunDir(path if path.is_dir() else path.parent.parent)  # a run, or RUN/checkpoints/X.pt
    fingerprint = stage1.read_run().get("dataset_fingerprint") if stage1.run_json.is_file() else None
    other = fingerprint is not None and fingerprint != dataset.fingerprint
    if other and not cfg.init.allow_other_dataset:
        raise InputError(f"--init {cfg.init.path}: that run was trained on dataset {fingerprint}, not on this "
                         f"one ({dataset.fingerprint}); use a stage-1 run of this dataset, or pass "
                         "init.allow_other_dataset=true to start from it anyway")
    return {"init_dataset_fingerprint": fingerprint, "init_other_dataset": other}


def _run_info(cfg: TrainConfig, data: Path, dataset: DatasetInfo, status: str, **extra: Any) -> dict[str, Any]:
    return {"name": cfg.name, "method": cfg.method.name, "dist_loss": cfg.method.with_dist_loss,
            "display_name": cfg.method.display_name, "stage": 2 if cfg.init.path else 1,
            "init": cfg.init.path, "init_mode": cfg.init.mode if cfg.init.path else None,
            **init_dataset(cfg, dataset),
            "dataset_dir": str(Path(data).resolve()), "dataset_kind": dataset.kind, "dataset_fingerprint": dataset.fingerprint,
            "status": status, "selection_metric": cfg.selection_metric, "ecgka_version": __version__,
            "seed": cfg.seed, "group": cfg.group, "ablation": cfg.ablation, "variant": cfg.variant, **extra}


def _prepare_dir(run: RunDir, cfg: TrainConfig, data: Path, dataset: DatasetInfo, info: DistInfo, *,
                 force: bool, log: Callable[[str], None]) -> dict | None:
    """Decide what to do with the run folder (``resume.plan_run``), then (rank 0) clear a replaced run and
    write the marker, config.yaml and a ``running`` run.json. Returns the run.json of a complete run (skip)."""
    plan = plan_run(run, cfg, dataset.fingerprint, force=force)  # every rank: reads only
    barrier(info)  # nobody writes before every rank has read
    if plan.note and info.main:
        log(plan.note)
    if plan.action is Action.SKIP:
        return run.read_run()
    if info.main:
        if plan.action is Action.REPLACE:
            plan.claim.clear()
        plan.claim.write_marker(config_hash(comparable(cfg)))
        run.checkpoints_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(run.path)
        remove_stale_temps(run.checkpoints_dir)
        atomic_write_text(run.config_path, dump_yaml(config_to_dict(cfg)))
        atomic_write_json(run.run_json, _run_info(cfg, data, dataset, RUN_RUNNING, best_epoch=None))
    barrier(info)
    return None


def _hooks(cfg: TrainConfig, run: RunDir, info: DistInfo, dataset: DatasetInfo) -> list:
    checkpoints = CheckpointHook(run, cfg.checkpoint_every_steps, write=info.main)  # every rank: RNG gather
    if not info.main:
        return [checkpoints]
    hooks = [checkpoints]
    if cfg.progress:
        hooks += [ProgressBarHook(), EpochSummaryHook()]
    tensorboard = make_tensorboard_hook(run) if cfg.tensorboard else None
    mirror = make_mlflow_hook(cfg, run, config_hash(comparable(cfg)), dataset.fingerprint)  # after the log
    return hooks + [h for h in (tensorboard, mirror) if h is not None]


def train_run(cfg: TrainConfig, data_dir: str | Path, run_dir: str | Path, init: str | Path | None = None, *,
              force: bool = False, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train (or continue, extend, or skip if complete) one run; returns the final ``run.json`` content.

    ``force``: start over a complete or resumable run of another config. ``log`` receives the console lines
    (replacing, resuming, already complete; rank 0 only). A run that stops with an error is left
    ``failed`` (Ctrl-C: ``interrupted``) in run.json, with the reason."""
    model_kwargs(cfg.model.name, cfg.model.preset)  # unknown model or preset: fail before any data is read
    if init is not None:
        cfg = cfg.model_copy(update={"init": cfg.init.model_copy(update={"path": str(init)})})
    cfg.init.check_stage_1(f"config {cfg.name!r}")  # before any data is read or any file written
    if cfg.mlflow.tracking_uri:
        require_mlflow("mlflow.tracking_uri")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    info = init_distributed(make_runtime(cfg).device.type)
    try:
        return _train(cfg, Path(data_dir), RunDir(run_dir), make_runtime(cfg, info=info), info,
                      force=force, log=log or (lambda line: None))
    finally:
        shutdown(info)


def _load_splits(cfg: TrainConfig, data: Path, run: RunDir, info: DistInfo) -> tuple[SplitSource, SplitSource]:
    if not info.main:
        barrier(info)  # rank 0 builds the signal caches first
    train, val = (open_split(data, s, cfg, fallback_cache=run.cache_dir) for s in ("train", "val"))
    if info.main:
        barrier(info)
    return train, val


def _build_trainer(cfg: TrainConfig, dataset: DatasetInfo, train: SplitSource, val: SplitSource, runtime: Runtime,
                   info: DistInfo, hooks: list) -> Trainer:
    """``dataset``: the dataset description (``sources.describe_dataset``): label grid and training counts."""
    grid = dataset.grid
    model = build_model(cfg, train.in_channels)
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
                   optimizer=build_optimizer(cfg, model, criterion), train=train, val=val,
                   runtime=runtime, info=info, grid=grid,
                   train_counts=dataset.train_bins.array, hooks=hooks, views=training_views(cfg, criterion, train))


def check_steps(n_train: int, batch_size: int, data: str | Path | None = None) -> None:
    """An epoch must have at least one training step (whole batches only): a one-line error otherwise."""
    if n_train == 0:
        where = f"{data}: " if data is not None else ""
        raise InputError(f"{where}the training split is empty (0 samples): nothing to train on; rebuild the "
                         "dataset (its exclusions.csv says why rows were left out)")
    if n_train < batch_size:
        raise InputError(f"the training split has {n_train} samples, fewer than one batch of {batch_size}: "
                         "an epoch would have no training step; lower batch_size")


def _train(cfg: TrainConfig, data: Path, run: RunDir, runtime: Runtime, info: DistInfo, *,
           force: bool, log: Callable[[str], None]) -> dict:
    dataset = describe_dataset(data, cfg)
    if dataset.n_train is not None:  # before any file is written or read
        check_steps(dataset.n_train, cfg.batch_size, data)
    init_dataset(cfg, dataset)  # a stage-1 run of another dataset: refused before anything is written
    done = _prepare_dir(run, cfg, data, dataset, info, force=force, log=log)
    if done is not None:
        if info.main:
            log(f"{run.path}: already complete ({done.get('epochs_done')} epochs); nothing to do")
        return done
    try:  # from here on the run is this command's: a failure is recorded in run.json
        return _fit(cfg, data, dataset, run, runtime, info, log)
    except BaseException as exc:
        if info.main:
            record_failure(run, exc)
        raise


def write_bad_files(run: RunDir, sources: dict[str, SplitSource]) -> None:
    """``RUN/bad_files.csv``: the files each split left out (unreadable when opened, or failing to decode
    since); written when the dataset kind has files to skip."""
    import pandas as pd

    tables = [t.assign(split=s) for s, src in sources.items() if (t := src.bad_files()) is not None]
    if tables:
        table = pd.concat(tables, ignore_index=True)
        atomic_write_text(run.bad_files_path, table[["split", *[c for c in table.columns if c != "split"]]]
                          .to_csv(index=False, lineterminator="\n"))


def _fit(cfg: TrainConfig, data: Path, dataset: DatasetInfo, run: RunDir, runtime: Runtime, info: DistInfo,
         log: Callable[[str], None]) -> dict:
    seed_everything(cfg.seed)
    train, val = _load_splits(cfg, data, run, info)
    check_steps(len(train), cfg.batch_size, data)
    if info.main:
        write_bad_files(run, {"train": train, "val": val})
    trainer = _build_trainer(cfg, dataset, train, val, runtime, info, _hooks(cfg, run, info, dataset))
    if (state := load_last(run)) is not None:
        trainer.restore(state)
        if info.main:
            log(f"{run.path}: resuming from epoch {trainer.epoch + 1}"
                + (f", step {trainer.step + 1}" if trainer.step else "") + f" of {cfg.epochs}")
    trainer.fit()
    if info.main:
        write_bad_files(run, {"train": train, "val": val})
    best_epoch = trainer.best.get("epoch")  # run.json counts epochs from 1, as the console does
    summary = _run_info(cfg, data, dataset, RUN_COMPLETE, best_epoch=None if best_epoch is None else best_epoch + 1,
                        best_value=trainer.best.get("value"), epochs_done=trainer.epoch,
                        n_parameters=count_parameters(trainer.model),
                        trainable_parameters=count_parameters(trainer.model, True), world_size=info.world,
                        device=runtime.device.type, n_train=len(train), n_val=len(val))
    if info.main:
        atomic_write_json(run.run_json, summary)
    barrier(info)
    return summary
