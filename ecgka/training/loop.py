"""The epoch loop: steps, the criterion's epoch hooks, validation; everything else hangs off hooks.

``Trainer.fit`` is method-agnostic. Progress bars, summaries, checkpoints, the log and TensorBoard are
``ecgka.training.hooks``; the running sums are an ``EpochMeter``. The trainer's ``state()`` is what
``last.pt`` holds, and ``restore`` continues from it exactly.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ecgka.errors import InputError
from ecgka.io import utc_now
from ecgka.labels import LabelGrid
from ecgka.training.bn_recalibration import recalibrate_batchnorm
from ecgka.training.build import Runtime
from ecgka.training.checkpoint import model_state, rank_rng_state, rng_state, set_rng_state
from ecgka.training.config import TrainConfig
from ecgka.training.distributed import DistInfo, any_rank, average_gradients, gather_objects, gather_tensor
from ecgka.training.loader import epoch_batches, iterate_batches, to_device
from ecgka.training.meter import EpochMeter
from ecgka.training.prediction import predict_arrays
from ecgka.training.selection import selection_metrics
from ecgka.training.sources import SplitSource, uses_device_zscore
from ecgka.training.step import train_step
from ecgka.training.two_stage import frozen_backbone_eval

STATE_FORMAT = "ecgka-train-1"


def lr_factor(epoch: int, milestones: list[int], gamma: float) -> float:
    """MultiStepLR semantics: lr x gamma for every milestone <= epoch (epochs counted from 0)."""
    return gamma ** sum(1 for m in milestones if m <= epoch)


class FeatureCollector:
    """Training features and targets of an epoch for the criterion's statistics (FDS), moved to the host
    in one copy per ``flush_every`` steps."""

    def __init__(self, enabled: bool, flush_every: int = 10):
        self.enabled, self.flush_every = enabled, flush_every
        self.pending: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.features: list[torch.Tensor] = []
        self.targets: list[torch.Tensor] = []

    def add(self, features: torch.Tensor, targets: torch.Tensor) -> None:
        if self.enabled:
            self.pending.append((features, targets))
            if len(self.pending) >= self.flush_every:
                self.flush()

    def flush(self) -> None:
        if self.pending:
            self.features.append(torch.cat([f for f, _ in self.pending]).cpu())
            self.targets.append(torch.cat([t for _, t in self.pending]).cpu())
            self.pending.clear()

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        self.flush()
        return (torch.cat(self.features), torch.cat(self.targets)) if self.features else None


@dataclass
class Trainer:
    cfg: TrainConfig
    model: nn.Module  # the bare model (forward / forward_features / head)
    net: nn.Module  # FeatureModel, possibly compiled and DDP-wrapped
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    train: SplitSource
    val: SplitSource
    runtime: Runtime
    info: DistInfo
    grid: LabelGrid  # the dataset's label grid and shot rule (selection metrics)
    train_counts: np.ndarray  # training samples per bin (shot groups)
    hooks: list = field(default_factory=list)
    epoch: int = 0  # next epoch to run
    step: int = 0  # batches already done in ``epoch`` (mid-epoch resume)
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=dict)
    partial: dict[str, Any] = field(default_factory=dict)
    meter: EpochMeter | None = None
    n_batches: int = 0
    views: int = 1  # augmented views the loader stacks per batch (ConR's released views: 3)

    @property
    def in_channels(self) -> int:
        """The model's input channels (leads of an ECG, 3 for an image), recorded in every checkpoint."""
        return self.train.in_channels

    def emit(self, event: str, *args: Any) -> None:
        for hook in self.hooks:
            getattr(hook, event)(self, *args)

    def set_lr(self, epoch: int) -> float:
        factor = lr_factor(epoch, self.cfg.optim.milestones, self.cfg.optim.gamma)
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * (factor if group.get("scheduled", True) else 1.0)
        return self.cfg.optim.lr * factor

    def batches(self, epoch: int) -> list[np.ndarray]:
        return epoch_batches(len(self.train), self.cfg.batch_size, seed=self.cfg.seed, epoch=epoch,
                             rank=self.info.rank, world=self.info.world, drop_last=self.cfg.drop_last)

    def fit(self) -> None:
        while self.epoch < self.cfg.epochs:
            record = self.run_epoch(self.epoch)
            self.epoch, self.step, self.partial = self.epoch + 1, 0, {}
            self.emit("on_epoch_end", record)
        self.emit("on_fit_end")

    def run_epoch(self, epoch: int) -> dict[str, Any]:
        self._train_mode()
        self.criterion.on_epoch_start(epoch)
        lr = self.set_lr(epoch)
        batches = self.batches(epoch)
        if not batches:
            raise InputError(f"epoch {epoch + 1} has no training step: {len(self.train)} training samples "
                             f"for a batch of {self.cfg.batch_size}; lower batch_size")
        self.n_batches, self.meter = len(batches), EpochMeter(self.partial, epoch=epoch, any_rank=self._any_rank)
        features = FeatureCollector(getattr(self.criterion, "requires_features", False))
        self.emit("on_epoch_start", epoch, len(batches))
        for x, y in self.meter.timed(self._loader(batches[self.step:], epoch)):
            out = self._step(x, y, epoch)
            self.meter.add(out["loss"], out["terms"], len(y))
            features.add(out["features"], y)
            self.step += 1
            self.emit("on_step_end")
        sums = self.meter.close()
        self._criterion_epoch_end(epoch, features)
        return self._record(epoch, lr, sums)

    def _any_rank(self, flag: bool) -> bool:
        return any_rank(flag, self.info, self.runtime.device)

    def _train_mode(self) -> None:
        self.net.train()
        if self.cfg.init.frozen_backbone_in_eval:
            frozen_backbone_eval(self.model)

    def _loader(self, batches: list[np.ndarray], epoch: int):
        return iterate_batches(self.train, batches, prefetch=self.cfg.data.prefetch,
                               pin_memory=self.runtime.pin_memory, augment=(self.cfg.seed, epoch, self.step),
                               views=self.views)

    def _step(self, x: torch.Tensor, y: torch.Tensor, epoch: int) -> dict[str, Any]:
        x, y = to_device(x, y, self.runtime.device, uses_device_zscore(self.train, self.cfg))
        extra = [p for g in self.optimizer.param_groups if not g.get("scheduled", True) for p in g["params"]]
        return train_step(self.net, self.criterion, self.optimizer, x, y, epoch=epoch,
                          views_std=self.cfg.views_noise_std, views=self.cfg.views,
                          after_backward=lambda: average_gradients(extra, self.info))

    def _criterion_epoch_end(self, epoch: int, collector: FeatureCollector) -> None:
        if collector.enabled and getattr(self.cfg.method.params, "statistics", "steps") == "epoch_pass":
            collector = self._epoch_pass(epoch)
        tensors = collector.tensors()
        if tensors is None:
            return
        f, t = tensors
        if self.info.enabled:
            device = self.runtime.device
            f, t = gather_tensor(f.to(device), self.info).cpu(), gather_tensor(t.to(device), self.info).cpu()
        self.criterion.on_epoch_end(epoch, f, t)

    def _epoch_pass(self, epoch: int) -> FeatureCollector:
        """The released FDS statistics: after the epoch's steps, one no-grad pass over the whole training set
        in train mode (fresh augmentation, the last partial batch kept), collecting the features the head
        sees, i.e. after the criterion's calibration (the released code smoothed them in place)."""
        collector = FeatureCollector(True)
        batches = epoch_batches(len(self.train), self.cfg.batch_size, seed=self.cfg.seed + 104729, epoch=epoch,
                                rank=self.info.rank, world=self.info.world, drop_last=False)
        normalise = uses_device_zscore(self.train, self.cfg)
        with torch.no_grad():
            for x, y in iterate_batches(self.train, batches, prefetch=self.cfg.data.prefetch,
                                        pin_memory=self.runtime.pin_memory,
                                        augment=(self.cfg.seed + 104729, epoch, 0)):
                x, y = to_device(x, y, self.runtime.device, normalise)
                _, features = self.net(x, y, epoch)
                collector.add(self.criterion.transform_features(features, y, epoch), y)
        return collector

    def validate(self) -> dict[str, float]:
        if self.cfg.recalibrate_bn and not self.cfg.init.frozen_backbone_in_eval:  # fixed statistics stay
            recalibrate_batchnorm(self.model, self.train, samples=self.cfg.recalibrate_bn_samples,
                                  batch_size=self.cfg.data.eval_batch_size, seed=self.cfg.seed,
                                  epoch=self.epoch, device=self.runtime.device,
                                  normalise=uses_device_zscore(self.train, self.cfg), prefetch=self.cfg.data.prefetch)
        pred = predict_arrays(self.model, self.val, self.runtime,
                              batch_size=self.cfg.data.eval_batch_size,
                              normalise=uses_device_zscore(self.val, self.cfg), prefetch=self.cfg.data.prefetch)
        keep = len(pred)
        if self.cfg.data.val_drop_last:  # whole eval batches only, as the released validation loader
            keep -= keep % self.cfg.data.eval_batch_size
        return selection_metrics(pred[:keep], self.val.labels[:keep], self.grid, self.train_counts)

    def _record(self, epoch: int, lr: float, sums: dict[str, Any]) -> dict[str, Any]:
        t_val = time.perf_counter()
        val = self.validate()
        n = max(sums["batches"], 1)
        samples = sums["samples"] * self.info.world
        record = {"epoch": epoch, "time": utc_now(), "lr": lr,
                  "train_loss": sums["loss"] / n, "train_terms": {k: v / n for k, v in sums["terms"].items()},
                  "seconds": sums["seconds"] + time.perf_counter() - t_val, "train_seconds": sums["seconds"],
                  "data_wait_seconds": sums["data_seconds"], "samples": samples,
                  "samples_per_s": samples / max(sums["seconds"], 1e-9), "val": val}
        metric = val[self.cfg.selection_metric]
        record["is_best"] = math.isfinite(metric) and (not self.best or metric < self.best["value"])
        if record["is_best"]:
            self.best = {"epoch": epoch, "value": metric, "metric": self.cfg.selection_metric}
        self.history.append(record)
        return record

    def rng_states(self) -> list[dict[str, Any]]:
        """Every rank's RNG states, rank by rank (a collective under DDP: every rank calls it)."""
        return gather_objects(rng_state(self.runtime.device), self.info)

    def state(self, rng: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Everything ``last.pt`` needs to continue exactly (weights-only loadable). ``rng``: the per-rank
        states from ``rng_states`` (gathered on every rank); None: this process's own (single process)."""
        rng = rng if rng is not None else [rng_state(self.runtime.device)]
        return {"format": STATE_FORMAT, "model": model_state(self.model), "in_channels": self.in_channels,
                "optimizer": self.optimizer.state_dict(), "criterion": self.criterion.state_dict(),
                "rng": rng, "epoch": self.epoch, "step": self.step, "history": self.history,
                "best": self.best, "partial": self.partial}

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from ``last.pt``: weights, optimiser, criterion state, this rank's RNG, counters, history."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.criterion.load_state_dict(state["criterion"])
        set_rng_state(rank_rng_state(state["rng"], self.info.rank, self.info.world), self.runtime.device)
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.history, self.best, self.partial = list(state["history"]), dict(state["best"]), dict(state["partial"])
