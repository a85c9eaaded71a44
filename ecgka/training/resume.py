"""Re-using a run folder: what a new ``train`` command does with what is already there.

One table (``plan_run``), decided before anything is written:

- missing or empty folder: a new run;
- the same config (volatile keys aside): skip a complete run, continue a resumable one from ``last.pt``;
- the same config with more ``epochs`` and a ``last.pt``: extend the run (continue from ``last.pt``; the
  step schedule is a function of the epoch, and the best epoch is kept across the extension);
- a failed run, or one that never finished a step (no ``last.pt``): replaced without ceremony;
- a complete or resumable run with another config or dataset: refused, unless ``force`` (start over).

Any folder that is not a run folder (a dataset, a user's folder, a file) is refused by
``ecgka.catalog.claim_folder``.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import Any

from ecgka.catalog import Claim, FolderKind, RunDir, claim_folder
from ecgka.config import config_to_dict
from ecgka.errors import ConfigError
from ecgka.io import atomic_write_json
from ecgka.training.checkpoint import load_checkpoint
from ecgka.training.config import TrainConfig

# Keys that may differ when a run is continued (they do not change the result).
VOLATILE_KEYS = ("progress", "threads", "tensorboard", "mlflow")

RUN_FAILED, RUN_INTERRUPTED, RUN_RUNNING, RUN_COMPLETE = "failed", "interrupted", "running", "complete"


class Action(str, enum.Enum):
    NEW = "new"  # nothing there: start
    SKIP = "skip"  # complete with the same config
    RESUME = "resume"  # continue from last.pt with the same config
    EXTEND = "extend"  # same config, more epochs: continue from last.pt
    REPLACE = "replace"  # clear the folder, then start


@dataclass(frozen=True)
class Plan:
    action: Action
    claim: Claim
    note: str | None = None  # the console line saying what happens to the folder


def comparable(cfg: TrainConfig | dict) -> dict[str, Any]:
    data = config_to_dict(cfg) if isinstance(cfg, TrainConfig) else dict(cfg)
    return {k: v for k, v in data.items() if k not in VOLATILE_KEYS}


def config_differences(old: dict[str, Any], cfg: TrainConfig) -> list[str]:
    """Top-level keys whose values differ between a run's config.yaml and ``cfg``."""
    new = json.loads(json.dumps(comparable(cfg)))
    old = comparable(old)
    return sorted(k for k in set(new) | set(old) if old.get(k) != new.get(k))


def plan_run(run: RunDir, cfg: TrainConfig, fingerprint: str | None, *, force: bool = False) -> Plan:
    """Decide what ``train`` does with ``run`` (see the module docstring); raise ConfigError to refuse."""
    claim = claim_folder(run.path, FolderKind.RUN)
    if not run.is_run():  # missing, empty, or leftovers of a run that never wrote its config
        return Plan(Action.REPLACE if run.run_json.is_file() else Action.NEW, claim)
    info = run.read_run() if run.run_json.is_file() else {}
    status, old = info.get("status"), run.read_config()
    diff = config_differences(old, cfg) + (["dataset"] if info and info.get("dataset_fingerprint") != fingerprint else [])
    has_last = run.checkpoint("last").is_file()
    if status == RUN_FAILED and (diff or not has_last):
        return Plan(Action.REPLACE, claim, f"replacing the failed run in {run.path}")
    if not has_last and status != RUN_COMPLETE:  # never saved an epoch: nothing to keep
        return Plan(Action.REPLACE, claim, f"replacing the unfinished run in {run.path} (no epoch was saved)")
    if not diff:
        return Plan(Action.SKIP if status == RUN_COMPLETE else Action.RESUME, claim)
    if diff == ["epochs"] and has_last and cfg.epochs > int(old.get("epochs") or 0):
        return Plan(Action.EXTEND, claim, f"extending the run in {run.path} from {old.get('epochs')} to "
                                          f"{cfg.epochs} epochs")
    what = "complete" if status == RUN_COMPLETE else "resumable"
    if force:
        return Plan(Action.REPLACE, claim, f"replacing the {what} run in {run.path} (--force; it differed in "
                                           f"{', '.join(diff)})")
    raise ConfigError(_refusal(run, what, diff, old.get("epochs"), cfg.epochs))


def _refusal(run: RunDir, what: str, diff: list[str], old_epochs: Any, epochs: int) -> str:
    """The one line refusing another config in a complete or resumable run, and what to do instead."""
    fix = "pass --force to start it over, or choose another --out for a new run"
    if diff == ["epochs"]:
        return (f"{run.path}: holds a {what} run of {old_epochs} epochs; a run cannot be shortened to {epochs} "
                f"(its later epochs are trained): {fix}")
    return f"{run.path}: holds a {what} run with a different config (differs in {', '.join(diff)}); {fix}"


def record_failure(run: RunDir, exc: BaseException) -> None:
    """Mark a started run ``failed`` (or ``interrupted``) in run.json with the reason, so the next command
    knows it may replace (or resume) it."""
    if not run.run_json.is_file():
        return
    info = run.read_run()
    if info.get("status") != RUN_RUNNING:
        return
    interrupted = isinstance(exc, KeyboardInterrupt)
    message = "interrupted; resume with the same command" if interrupted else \
        (str(exc).strip().splitlines() or [""])[0]
    atomic_write_json(run.run_json, {**info, "status": RUN_INTERRUPTED if interrupted else RUN_FAILED,
                                     "error": {"type": type(exc).__name__, "message": message}})


def load_last(run: RunDir) -> dict[str, Any] | None:
    path = run.checkpoint("last")
    return load_checkpoint(path) if path.is_file() else None
