"""Checkpoints: plain dicts of tensors and numbers (``torch.load(weights_only=True)``), written atomically.

``last.pt`` holds everything needed to continue exactly (model, optimiser, criterion state, RNG states,
epoch/step counters, the log history); ``best.pt`` holds the model weights of the selected epoch.
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


def rng_state() -> dict[str, Any]:
    """Torch (CPU and CUDA), NumPy legacy and Python RNG states as weights_only-loadable values."""
    py_version, py_state, py_gauss = random.getstate()
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "python": {"version": py_version, "state": list(py_state), "gauss": py_gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    npst = state["numpy"]
    np.random.set_state(("MT19937", npst["keys"].numpy().astype(np.uint32), npst["pos"],
                         npst["has_gauss"], npst["gauss"]))
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


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
