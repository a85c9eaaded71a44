"""Trainer hooks: everything around the steps that is policy, not training (progress bar, epoch summary,
checkpoint cadence, checkpoints and log, TensorBoard).

A hook overrides any of ``on_epoch_start(trainer, epoch, n_batches)``, ``on_step_end(trainer)``,
``on_epoch_end(trainer, record)`` and ``on_fit_end(trainer)``; the trainer calls every hook in order.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

from ecgka.catalog import RunDir
from ecgka.console import say
from ecgka.io import atomic_write_text
from ecgka.progress import progress_bar
from ecgka.training.checkpoint import model_state, save_checkpoint

if TYPE_CHECKING:  # annotations only
    from ecgka.training.loop import Trainer


class Hook:
    def on_epoch_start(self, trainer: Trainer, epoch: int, n_batches: int) -> None: ...

    def on_step_end(self, trainer: Trainer) -> None: ...

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None: ...

    def on_fit_end(self, trainer: Trainer) -> None: ...


class ProgressBarHook(Hook):
    """A tqdm bar per epoch on stderr, shown only on a terminal, cleared when the epoch ends."""

    def __init__(self, every: int = 10):
        self.every, self.bar = every, None

    def on_epoch_start(self, trainer: Trainer, epoch: int, n_batches: int) -> None:
        self.bar = progress_bar(total=n_batches, initial=trainer.step, desc=f"epoch {epoch + 1}/{trainer.cfg.epochs}",
                                unit="batch", leave=False)

    def on_step_end(self, trainer: Trainer) -> None:
        self.bar.update(1)
        if trainer.step % self.every == 0:
            self.bar.set_postfix(loss=f"{trainer.meter.mean_loss:.4f}")

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if self.bar is not None:
            self.bar.close()


class EpochSummaryHook(Hook):
    """One line per finished epoch on stderr, epochs counted from 1."""

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        metric = trainer.cfg.selection_metric
        say(f"epoch {record['epoch'] + 1}/{trainer.cfg.epochs}: loss {record['train_loss']:.4f}, "
            f"val {metric} {record['val'][metric]:.4f}{' (best)' if record['is_best'] else ''}, "
            f"{record['samples_per_s']:.0f} samples/s, {record['seconds']:.1f} s", file=sys.stderr)


class CheckpointHook(Hook):
    """After each epoch: ``last.pt`` (+ ``best.pt`` when the epoch is best), then ``log.jsonl`` (both
    rewritten atomically from the same state, so they always agree). Every ``every_steps`` steps inside an
    epoch (0: never): ``last.pt`` with the partial epoch's sums.

    Under DDP every rank runs this hook (gathering every rank's RNG states is a collective) and only the
    ``write`` rank (rank 0) writes."""

    def __init__(self, run: RunDir, every_steps: int = 0, write: bool = True):
        self.run, self.every_steps, self.write = run, every_steps, write

    def on_step_end(self, trainer: Trainer) -> None:
        if self.every_steps and trainer.step % self.every_steps == 0 and trainer.step < trainer.n_batches:
            trainer.partial = trainer.meter.snapshot()
            self.save_last(trainer)

    def save_last(self, trainer: Trainer) -> None:
        rng = trainer.rng_states()
        if self.write:
            save_checkpoint(self.run.checkpoint("last"), trainer.state(rng))

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if self.write and record.get("is_best"):
            save_checkpoint(self.run.checkpoint("best"), {"model": model_state(trainer.model),
                                                           "in_channels": trainer.in_channels,
                                                           "epoch": record["epoch"], "val": record["val"]})
        self.save_last(trainer)
        if self.write:
            write_log(self.run, trainer.history)


def write_log(run: RunDir, history: list[dict[str, Any]]) -> None:
    atomic_write_text(run.log_path, "".join(json.dumps(r) + "\n" for r in history))


class TensorBoardHook(Hook):
    """Scalars per epoch (train loss and terms, val metrics, lr, samples/s) for TensorBoard, when the
    ``tensorboard`` package is installed (``make_tensorboard_hook`` returns None otherwise)."""

    def __init__(self, writer):
        self.writer = writer

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        step = record["epoch"] + 1
        scalars = {"train/loss": record["train_loss"], "lr": record["lr"], "samples_per_s": record["samples_per_s"],
                   **{f"train/{k}": v for k, v in record["train_terms"].items()},
                   **{f"val/{k}": v for k, v in record["val"].items()}}
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def on_fit_end(self, trainer: Trainer) -> None:
        self.writer.close()


def make_tensorboard_hook(run: RunDir) -> TensorBoardHook | None:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard not installed: the hook is optional
        return None
    return TensorBoardHook(SummaryWriter(log_dir=str(run.tensorboard_dir)))
