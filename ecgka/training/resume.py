"""Re-using a run directory: continue only with the same config, from ``last.pt``."""

from __future__ import annotations

import json
from typing import Any

from ecgka.catalog import RunDir
from ecgka.config import config_to_dict
from ecgka.errors import ConfigError
from ecgka.training.checkpoint import load_checkpoint
from ecgka.training.config import TrainConfig

# Keys that may differ when a run is continued (they do not change the result).
VOLATILE_KEYS = ("progress", "threads", "tensorboard")


def comparable(cfg: TrainConfig | dict) -> dict[str, Any]:
    data = config_to_dict(cfg) if isinstance(cfg, TrainConfig) else dict(cfg)
    return {k: v for k, v in data.items() if k not in VOLATILE_KEYS}


def check_run_dir(run: RunDir, cfg: TrainConfig) -> None:
    """A run directory may be continued only with the same config (volatile keys aside)."""
    if not run.config_path.is_file():
        return
    old = run.read_config()
    new = json.loads(json.dumps(comparable(cfg)))
    if comparable(old) != new:
        diff = sorted(k for k in set(new) | set(old) if k not in VOLATILE_KEYS and old.get(k) != new.get(k))
        raise ConfigError(f"{run.path}: holds a run with a different config (differs in {', '.join(diff)}); "
                          "use another --out or the same config")


def load_last(run: RunDir) -> dict[str, Any] | None:
    path = run.checkpoint("last")
    return load_checkpoint(path) if path.is_file() else None
