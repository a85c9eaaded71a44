"""Everything a run is built from: the runtime (device, bf16, compile, pin_memory, each decided once here),
the model, the criterion, the optimiser and the wrapped network the trainer steps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ecgka.errors import InputError
from ecgka.labels import LabelGrid
from ecgka.losses import LossContext
from ecgka.losses import build_criterion as build_method_criterion
from ecgka.models import create_model
from ecgka.training.config import TrainConfig
from ecgka.training.distributed import DistInfo
from ecgka.training.step import FeatureModel


@dataclass(frozen=True)
class Runtime:
    """Where and how a run computes. ``make_runtime`` turns bf16 autocast and torch.compile on for CUDA
    only; tests build a CPU Runtime with ``bf16`` (CPU autocast) or a counting ``compile_backend``."""

    device: torch.device
    bf16: bool = False
    compile: bool = False
    compile_backend: Any = "inductor"  # torch.compile's backend (injectable for tests, not a user option)

    @property
    def amp_device(self) -> str | None:
        """The device type autocast runs on (bf16), or None (float32 throughout)."""
        return self.device.type if self.bf16 else None

    @property
    def pin_memory(self) -> bool:
        return self.device.type == "cuda"


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when torch sees a device, else the CPU), ``cpu`` or ``cuda``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("device 'cuda' requested but torch sees no CUDA device (use device=auto or cpu)")
    return torch.device(name)


def make_runtime(cfg: TrainConfig, device: str | None = None, info: DistInfo | None = None) -> Runtime:
    """The runtime of ``cfg`` (``device`` overrides its device); under DDP on CUDA, this rank's GPU."""
    dev = resolve_device(device or cfg.device)
    if dev.type == "cuda" and info is not None and info.enabled:
        dev = torch.device("cuda", info.local_rank)
    on_cuda = dev.type == "cuda"
    return Runtime(dev, bf16=cfg.bf16 and on_cuda, compile=cfg.compile and on_cuda)


def build_model(cfg: TrainConfig, in_channels: int) -> torch.nn.Module:
    return create_model(cfg.model.name, preset=cfg.model.preset, in_channels=in_channels, num_outputs=1,
                        **cfg.model.overrides)


def build_criterion(cfg: TrainConfig, train_labels: np.ndarray, grid: LabelGrid, batch_rows: int):
    """The method's criterion on the dataset's label grid (``batch_rows``: this rank's batch)."""
    ctx = LossContext(np.asarray(train_labels, dtype=np.float64), grid, batch_rows)
    return build_method_criterion(cfg.method, ctx)


def build_optimizer(cfg: TrainConfig, model: torch.nn.Module, criterion: torch.nn.Module) -> torch.optim.Optimizer:
    """Adam over the trainable model parameters (scheduled) plus the criterion's own groups (not)."""
    groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": cfg.optim.lr,
               "base_lr": cfg.optim.lr, "scheduled": True}]
    decay = {} if cfg.optim.criterion_weight_decay is None else {"weight_decay": cfg.optim.criterion_weight_decay}
    groups += [{**g, **decay, "base_lr": g.get("lr", cfg.optim.lr), "scheduled": False}
               for g in criterion.param_groups()]
    return torch.optim.Adam(groups, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)


def wrap_network(model: torch.nn.Module, criterion, runtime: Runtime, info: DistInfo) -> torch.nn.Module:
    """The network the trainer steps: features -> criterion transform -> head, DDP-wrapped as configured.

    Only the backbone (``forward_features``) is compiled, inside the wrapper: DDP's hooks stay outside the
    graph, and the epoch-dependent transform and the float32 head stay eager (no recompile per epoch)."""
    net: torch.nn.Module = FeatureModel(model, criterion.transform_features, amp_device=runtime.amp_device,
                                        compile_backend=runtime.compile_backend if runtime.compile else None)
    if info.enabled:
        from torch.nn.parallel import DistributedDataParallel

        ids = [runtime.device.index] if runtime.device.type == "cuda" else None
        net = DistributedDataParallel(net, device_ids=ids)
    return net
