"""The typed training config (``configs/train/*.yaml``): model, method, optimiser, data, device.

Defaults are the paper's ECG-Ka-DIR protocol: 10 epochs, Adam lr 1e-3 (x0.1 at epochs 5 and 8), weight
decay 1e-5, batch 512. A YAML file may ``extends: other.yaml`` (path relative to the file): the parent is
loaded first and the child's keys are merged into it (mappings recursively, everything else replaced).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from ecgka.config import ConfigModel, apply_overrides, read_yaml, validate_config
from ecgka.errors import ConfigError
from ecgka.losses.config import MethodConfig


class ModelConfig(ConfigModel):
    """A registered model (``ecgka.models``), a preset and optional constructor overrides."""

    name: str = "net1d"
    preset: str | None = None  # None: the model's default preset ("ecg" for net1d)
    overrides: dict[str, Any] = Field(default_factory=dict)


class OptimConfig(ConfigModel):
    """Adam with a step schedule: lr x gamma at each milestone epoch (0-based, MultiStepLR semantics)."""

    lr: float = 1e-3
    weight_decay: float = 1e-5
    milestones: list[int] = Field(default_factory=lambda: [5, 8])
    gamma: float = 0.1


class DataConfig(ConfigModel):
    """Which leads to feed (None: all leads of the dataset) and where the signal cache lives."""

    leads: list[str] | None = None
    zscore: bool = True
    cache_dir: str | None = None  # None: DATA_DIR/.cache (falls back to RUN_DIR/cache if read-only)
    prefetch: int = 2  # batches prepared ahead by a background thread
    eval_batch_size: int = 1024


class InitConfig(ConfigModel):
    """Stage 2: start from a stage-1 run (or checkpoint).

    ``head`` (the paper's two-stage scheme for Dist Loss and Balanced MSE): re-initialise the final linear
    layer and freeze everything else. ``backbone`` says how the frozen backbone runs while the head trains:
    ``eval`` (default) with dropout off and BatchNorm statistics fixed, so the head is fit on exactly the
    features it is used with; ``train`` as released (dropout active, BatchNorm statistics keep updating).
    ``full``: load the weights and fine-tune all of them (e.g. a baseline's model fine-tuned with Dist Loss).
    """

    path: str | None = None
    mode: Literal["head", "full"] = "head"
    backbone: Literal["eval", "train"] = "eval"
    checkpoint: Literal["best", "last"] = "best"

    @property
    def frozen_backbone_in_eval(self) -> bool:
        """Stage 2 trains the head alone on an eval-mode backbone."""
        return self.path is not None and self.mode == "head" and self.backbone == "eval"


class TrainConfig(ConfigModel):
    name: str = "run"
    model: ModelConfig = Field(default_factory=ModelConfig)
    method: MethodConfig = Field(default_factory=MethodConfig)
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(512, ge=2)  # global batch; split evenly over DDP ranks
    optim: OptimConfig = Field(default_factory=OptimConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    init: InitConfig = Field(default_factory=InitConfig)
    # A fresh head's bias starts at the mean training label ("default": PyTorch's init). Same optimum,
    # far fewer steps to leave the trivial region on small runs; see docs/training.md.
    head_bias_init: Literal["train_mean", "default"] = "train_mean"
    views_noise_std: float = Field(0.1, ge=0)  # Gaussian-noise views (ConR), in z-score units
    # Re-estimate BatchNorm statistics with dropout off before each validation (and so in every saved
    # checkpoint): removes the dropout/BatchNorm variance shift (ecgka/training/bn_recalibration.py).
    # false: the released behaviour.
    recalibrate_bn: bool = True
    recalibrate_bn_samples: int = Field(4096, ge=0)
    selection_metric: Literal["mae", "balanced_mae"] = "balanced_mae"
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    bf16: bool = False  # bf16 autocast (CUDA only; ignored on CPU)
    compile: bool = False  # torch.compile (CUDA only; ignored on CPU)
    gather_predictions: bool = False  # DDP: Dist Loss distribution term over all ranks' predictions
    checkpoint_every_steps: int = Field(0, ge=0)  # 0: only at the end of each epoch
    progress: bool = True  # the epoch's progress bar (on a terminal only) and one summary line per epoch
    tensorboard: bool = True  # TensorBoard scalars in RUN/tensorboard/ when the tensorboard package is installed
    threads: int | None = None  # torch CPU threads (None: leave torch's default)
    # How the report groups this run (written to run.json; see docs/report.md): "main" (method comparison),
    # "ablation_<name>" (one ablation table, rows labelled by ``ablation``) or "imbalance" (``variant``).
    # None: "main", or "imbalance" for a dataset under .../variants/<name>.
    group: str | None = None
    ablation: str | None = None
    variant: str | None = None


def _merge(base: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in child.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) \
            else value
    return out


def read_config_tree(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a YAML config, resolving ``extends:`` chains (relative to each file)."""
    path = Path(path).resolve()
    if path in _seen:
        raise ConfigError(f"{path}: 'extends' cycle ({' -> '.join(p.name for p in (*_seen, path))})")
    data = read_yaml(path)
    parent = data.pop("extends", None)
    if parent is None:
        return data
    return _merge(read_config_tree(path.parent / str(parent), (*_seen, path)), data)


def load_train_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Load a training config (with ``extends``), apply ``key=value`` overrides, validate."""
    data = read_config_tree(path) if path is not None else {}
    data = apply_overrides(data, overrides)
    return validate_config(TrainConfig, data, source=str(path) if path else "train config")
