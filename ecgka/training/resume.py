"""Run-directory state: what a checkpoint holds, restoring it, and checking a re-used run directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from ecgka.config import config_to_dict
from ecgka.errors import ConfigError
from ecgka.io import atomic_write_text
from ecgka.training.checkpoint import load_checkpoint, model_state, rng_state, save_checkpoint, set_rng_state
from ecgka.training.config import TrainConfig
from ecgka.training.loop import Hook, Trainer

# Keys that may differ when a run is continued (they do not change the result).
VOLATILE_KEYS = ("progress", "threads")


def comparable(cfg: TrainConfig | dict) -> dict[str, Any]:
    data = config_to_dict(cfg) if isinstance(cfg, TrainConfig) else dict(cfg)
    return {k: v for k, v in data.items() if k not in VOLATILE_KEYS}


def check_run_dir(run_dir: Path, cfg: TrainConfig) -> None:
    """A run directory may be continued only with the same config (volatile keys aside)."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return
    old = yaml.safe_load(path.read_text()) or {}
    new = json.loads(json.dumps(comparable(cfg)))
    if comparable(old) != new:
        diff = sorted(k for k in set(new) | set(old) if k not in VOLATILE_KEYS and old.get(k) != new.get(k))
        raise ConfigError(f"{run_dir}: holds a run with a different config (differs in {', '.join(diff)}); "
                          "use another --out or the same config")


def trainer_state(t: Trainer) -> dict[str, Any]:
    return {"format": "ecgka-train-1", "model": model_state(t.model), "in_channels": len(t.leads),
            "optimizer": t.optimizer.state_dict(), "criterion": t.criterion.state_dict(),
            "rng": rng_state(), "epoch": t.epoch, "step": t.step, "history": t.history, "best": t.best,
            "partial": t.partial}


def restore(t: Trainer, state: dict[str, Any]) -> None:
    """Continue from ``last.pt``: weights, optimiser, criterion state, RNG, counters, history."""
    t.model.load_state_dict(state["model"])
    t.optimizer.load_state_dict(state["optimizer"])
    t.criterion.load_state_dict(state["criterion"])
    set_rng_state(state["rng"])
    t.epoch, t.step = int(state["epoch"]), int(state["step"])
    t.history, t.best, t.partial = list(state["history"]), dict(state["best"]), dict(state["partial"])


def load_last(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / "checkpoints" / "last.pt"
    return load_checkpoint(path) if path.is_file() else None


def write_log(run_dir: Path, history: list[dict[str, Any]]) -> None:
    atomic_write_text(run_dir / "log.jsonl", "".join(json.dumps(r) + "\n" for r in history))


class CheckpointHook(Hook):
    """After each epoch: ``last.pt`` (+ ``best.pt`` when the epoch is best), then ``log.jsonl`` (both
    rewritten atomically from the same state, so they always agree). Every N steps: ``last.pt`` only."""

    def __init__(self, run_dir: Path, enabled: bool = True):
        self.dir = run_dir / "checkpoints"
        self.run_dir, self.enabled = run_dir, enabled

    def on_step_end(self, trainer: Trainer) -> None:
        if self.enabled:
            save_checkpoint(self.dir / "last.pt", trainer_state(trainer))

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if record.get("is_best"):
            save_checkpoint(self.dir / "best.pt", {"model": model_state(trainer.model),
                                                   "in_channels": len(trainer.leads),
                                                   "epoch": record["epoch"], "val": record["val"]})
        save_checkpoint(self.dir / "last.pt", trainer_state(trainer))
        write_log(self.run_dir, trainer.history)
