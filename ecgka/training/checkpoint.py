"""Checkpoints: plain dicts of tensors and numbers (``torch.load(weights_only=True)``), written atomically.

``last.pt`` holds everything needed to continue exactly (model, optimiser, criterion state, the RNG states
of every process (a per-rank list: under DDP each rank continues its own generators), epoch/step counters,
the log history); ``best.pt`` holds the model weights of the selected epoch.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ecgka.errors import InputError
from ecgka.io import atomic_path


def rng_state(device: torch.device | None = None) -> dict[str, Any]:
    """Torch CPU, NumPy legacy and Python RNG states (and ``device``'s CUDA generator when it is a CUDA
    device) as weights_only-loadable values: the generators of one process."""
    py_version, py_state, py_gauss = random.getstate()
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "python": {"version": py_version, "state": list(py_state), "gauss": py_gauss},
    }
    if device is not None and device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device | None = None) -> None:
    """Restore what ``rng_state`` saved (the CUDA generator onto ``device``)."""
    torch.set_rng_state(state["torch"])
    npst = state["numpy"]
    np.random.set_state(("MT19937", npst["keys"].numpy().astype(np.uint32), npst["pos"],
                         npst["has_gauss"], npst["gauss"]))
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    cuda = state.get("cuda")
    if isinstance(cuda, list) and torch.cuda.is_available():  # an older checkpoint: every device's state
        torch.cuda.set_rng_state_all(cuda)
    elif cuda is not None and device is not None and device.type == "cuda":
        torch.cuda.set_rng_state(cuda, device)


def rank_rng_state(saved: list[dict[str, Any]] | dict[str, Any], rank: int, world: int) -> dict[str, Any]:
    """This rank's entry of a checkpoint's per-rank RNG list (an older single-process dict as is)."""
    if isinstance(saved, dict):
        if world > 1:
            raise InputError(f"last.pt holds one process's RNG state; it cannot continue on {world} processes")
        return saved
    if len(saved) != world:
        raise InputError(f"last.pt holds the RNG states of {len(saved)} processes; it cannot continue on "
                         f"{world} (use the same number of processes)")
    return saved[rank]


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` atomically (temp file, fsync, rename)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (no arbitrary unpickling)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # a truncated or foreign file
        raise InputError(f"{path}: not a loadable ecgka checkpoint ({type(exc).__name__}: {exc})") from None


def model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict of the bare model (unwrapping DDP / torch.compile), on the CPU."""
    bare = getattr(model, "_orig_mod", model)
    bare = getattr(bare, "module", bare)
    return {k: v.detach().cpu().clone() for k, v in bare.state_dict().items()}


def checkpoint_weights(state: dict[str, Any]) -> dict[str, Any]:
    """The model weights of a loaded checkpoint: ecgka's ``model`` entry, the released code's
    ``state_dict`` entry (its checkpoints are ``{"epoch", "state_dict", "optimizer", ...}``), or the dict itself
    (a bare state dict). A released head name or ``module.`` prefix is mapped by the model when it loads
    them (``ecgka.models.resnet.released_keys``)."""
    for key in ("model", "state_dict"):
        if isinstance(state.get(key), dict):
            return state[key]
    return state
