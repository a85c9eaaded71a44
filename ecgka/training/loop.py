"""The epoch loop: steps, the criterion's epoch hooks, validation, and hooks for logging/checkpoints.

``Trainer.fit`` is method-agnostic; everything that writes files hangs off ``hooks`` (``Hook`` methods
``on_step_end(trainer)`` and ``on_epoch_end(trainer, record)``).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ecgka.training.bn_recalibration import recalibrate_batchnorm
from ecgka.training.config import TrainConfig
from ecgka.training.shard_loading import SplitData
from ecgka.training.distributed import DistInfo, average_gradients, gather_tensor
from ecgka.training.loader import epoch_batches, iterate_batches, to_device
from ecgka.training.selection import selection_metrics
from ecgka.training.prediction import predict_arrays
from ecgka.training.step import train_step
from ecgka.training.two_stage import frozen_backbone_eval


class Hook:
    def on_step_end(self, trainer: Trainer) -> None: ...

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None: ...


class EpochSummaryHook(Hook):
    """One line per finished epoch on stderr (the tqdm bar of the epoch is cleared when it ends)."""

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        metric = trainer.cfg.selection_metric
        print(f"epoch {record['epoch']}/{trainer.cfg.epochs - 1}: loss {record['train_loss']:.4f}, "
              f"val {metric} {record['val'][metric]:.4f}{' (best)' if record['is_best'] else ''}, "
              f"{record['samples_per_s']:.0f} samples/s, {record['seconds']:.1f} s", file=sys.stderr, flush=True)


def lr_factor(epoch: int, milestones: list[int], gamma: float) -> float:
    """MultiStepLR semantics: lr x gamma for every milestone <= epoch (epochs counted from 0)."""
    return gamma ** sum(1 for m in milestones if m <= epoch)


@dataclass
class Trainer:
    cfg: TrainConfig
    model: nn.Module  # the bare model (forward / forward_features / head)
    net: nn.Module  # FeatureModel, possibly DDP- or compile-wrapped
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    train: SplitData
    val: SplitData
    leads: list[int]
    device: torch.device
    info: DistInfo
    manifest: dict
    hooks: list[Hook] = field(default_factory=list)
    epoch: int = 0  # next epoch to run
    step: int = 0  # batches already done in ``epoch`` (mid-epoch resume)
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=dict)
    partial: dict[str, Any] = field(default_factory=dict)

    def set_lr(self, epoch: int) -> float:
        factor = lr_factor(epoch, self.cfg.optim.milestones, self.cfg.optim.gamma)
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * (factor if group.get("scheduled", True) else 1.0)
        return self.cfg.optim.lr * factor

    def batches(self, epoch: int) -> list[np.ndarray]:
        return epoch_batches(len(self.train), self.cfg.batch_size, seed=self.cfg.seed, epoch=epoch,
                             rank=self.info.rank, world=self.info.world)

    def fit(self) -> None:
        while self.epoch < self.cfg.epochs:
            record = self.run_epoch(self.epoch)
            self.epoch, self.step, self.partial = self.epoch + 1, 0, {}
            for hook in self.hooks:
                hook.on_epoch_end(self, record)

    def _progress(self, total: int, epoch: int):
        from tqdm import tqdm

        return tqdm(total=total, initial=self.step, desc=f"epoch {epoch}/{self.cfg.epochs - 1}", unit="batch",
                    file=sys.stderr, leave=False, dynamic_ncols=True,
                    disable=not (self.cfg.progress and self.info.main))

    def run_epoch(self, epoch: int) -> dict[str, Any]:
        self.net.train()
        if self.cfg.init.frozen_backbone_in_eval:
            frozen_backbone_eval(self.model)
        self.criterion.on_epoch_start(epoch)
        lr = self.set_lr(epoch)
        batches = self.batches(epoch)
        sums = self.partial or {"loss": 0.0, "terms": {}, "batches": 0, "samples": 0, "seconds": 0.0,
                                "data_seconds": 0.0}
        feats, targets = [], []
        pending: list[dict[str, Any]] = []  # per-step losses still on the device
        pending_feats: list[tuple[torch.Tensor, torch.Tensor]] = []  # (features, targets) still on the device
        extra = [p for g in self.optimizer.param_groups if not g.get("scheduled", True) for p in g["params"]]
        t0 = wait0 = time.perf_counter()
        bar = self._progress(len(batches), epoch)
        for x, y in iterate_batches(self.train, batches[self.step:], self.leads, prefetch=self.cfg.data.prefetch,
                                    pin_memory=self.device.type == "cuda"):
            sums["data_seconds"] += time.perf_counter() - wait0
            x, y = to_device(x, y, self.device, self.cfg.data.zscore)
            out = train_step(self.net, self.criterion, self.optimizer, x, y, epoch=epoch,
                             views_std=self.cfg.views_noise_std, bf16=self.cfg.bf16,
                             after_backward=lambda: average_gradients(extra, self.info))
            pending.append({"loss": out["loss"], "terms": dict(out["terms"])})
            sums["batches"] += 1
            sums["samples"] += len(y)
            if getattr(self.criterion, "requires_features", False):  # on the device until the next flush
                pending_feats.append((out["features"], y))
            self.step += 1
            bar.update(1)
            if self.step % 10 == 0:
                self._flush(sums, pending)
                self._flush_features(pending_feats, feats, targets)
                bar.set_postfix(loss=f"{sums['loss'] / sums['batches']:.4f}")
            if self.cfg.checkpoint_every_steps and self.step % self.cfg.checkpoint_every_steps == 0 \
                    and self.step < len(batches):
                self._flush(sums, pending)
                self.partial = {**sums, "seconds": sums["seconds"] + time.perf_counter() - t0}
                for hook in self.hooks:
                    hook.on_step_end(self)
            wait0 = time.perf_counter()
        bar.close()
        self._flush(sums, pending)
        self._flush_features(pending_feats, feats, targets)
        sums["seconds"] += time.perf_counter() - t0
        self._epoch_features(epoch, feats, targets)
        return self._record(epoch, lr, sums)

    @staticmethod
    def _flush(sums: dict[str, Any], pending: list[dict[str, Any]]) -> None:
        """Add the pending per-step losses (device tensors) to ``sums``: one device-to-host copy per
        flush instead of a synchronising ``float()`` per step; same additions in the same order."""
        if not pending:
            return
        names = ["loss", *pending[0]["terms"]]
        rows = torch.stack([torch.stack([p["loss"], *p["terms"].values()]).float() for p in pending]).cpu()
        for values in rows.tolist():
            for name, value in zip(names, values, strict=True):
                if name == "loss":
                    sums["loss"] += value
                else:
                    sums["terms"][name] = sums["terms"].get(name, 0.0) + value
        pending.clear()

    @staticmethod
    def _flush_features(pending: list[tuple[torch.Tensor, torch.Tensor]], feats: list, targets: list) -> None:
        """Move the pending features and targets to the host in one copy each (not one per step)."""
        if pending:
            feats.append(torch.cat([f for f, _ in pending]).cpu())
            targets.append(torch.cat([t for _, t in pending]).cpu())
            pending.clear()

    def _epoch_features(self, epoch: int, feats: list, targets: list) -> None:
        if not feats:
            return
        f, t = torch.cat(feats), torch.cat(targets)
        if self.info.enabled:
            f, t = gather_tensor(f.to(self.device), self.info).cpu(), gather_tensor(t.to(self.device), self.info).cpu()
        self.criterion.on_epoch_end(epoch, f, t)

    def validate(self) -> dict[str, float]:
        if self.cfg.recalibrate_bn and not self.cfg.init.frozen_backbone_in_eval:  # fixed statistics stay
            recalibrate_batchnorm(self.model, self.train, self.leads, samples=self.cfg.recalibrate_bn_samples,
                                  batch_size=self.cfg.data.eval_batch_size, seed=self.cfg.seed,
                                  epoch=self.epoch, device=self.device, normalise=self.cfg.data.zscore,
                                  prefetch=self.cfg.data.prefetch)
        pred = predict_arrays(self.model, self.val, self.leads, batch_size=self.cfg.data.eval_batch_size,
                              device=self.device, bf16=self.cfg.bf16, normalise=self.cfg.data.zscore,
                              prefetch=self.cfg.data.prefetch)
        return selection_metrics(pred, self.val.labels, self.manifest.get("label", {}),
                                 self.manifest.get("shot_groups"))

    def _record(self, epoch: int, lr: float, sums: dict[str, Any]) -> dict[str, Any]:
        t_val = time.perf_counter()
        val = self.validate()
        n = max(sums["batches"], 1)
        samples = sums["samples"] * self.info.world
        record = {"epoch": epoch, "lr": lr, "train_loss": sums["loss"] / n,
                  "train_terms": {k: v / n for k, v in sums["terms"].items()},
                  "seconds": sums["seconds"] + time.perf_counter() - t_val, "train_seconds": sums["seconds"],
                  "data_wait_seconds": sums["data_seconds"], "samples": samples,
                  "samples_per_s": samples / max(sums["seconds"], 1e-9),
                  "val": val}
        metric = val[self.cfg.selection_metric]
        if not self.best or metric < self.best["value"]:
            self.best = {"epoch": epoch, "value": metric, "metric": self.cfg.selection_metric}
            record["is_best"] = True
        else:
            record["is_best"] = False
        self.history.append(record)
        return record
