"""Stage 2 of the paper's scheme: start from a stage-1 run.

``head`` mode (Dist Loss, Balanced MSE as published): load the stage-1 weights, re-initialise the final
linear layer, freeze every other parameter. By default the frozen backbone runs in eval mode while the head
trains (:func:`frozen_backbone_eval`): dropout off, BatchNorm statistics fixed, so the head is fit on the
very features it is used with. ``init.backbone=train`` keeps the released behaviour (the whole model in
train() mode: BatchNorm running statistics keep updating and dropout stays active in the frozen backbone;
with Net1D's Dropout(0.5) the head is then fit on noisy features, see docs/training.md).
``full`` mode loads the weights and fine-tunes everything (a baseline's model fine-tuned with Dist Loss).
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from ecgka.catalog import resolve_weights
from ecgka.errors import InputError
from ecgka.training.checkpoint import checkpoint_weights, load_checkpoint


def load_init(model: nn.Module, path: str | Path, which: str = "best") -> Path:
    """Load the weights of a run directory (its ``which`` checkpoint) or a checkpoint file."""
    file = resolve_weights(path, which)
    state = load_checkpoint(file)
    weights = checkpoint_weights(state)  # ecgka's "model", or a released checkpoint's "state_dict"
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise InputError(f"{file}: weights do not fit this model ({str(exc).splitlines()[0]}); "
                         "use the stage-1 model config") from None
    return file


def head_only(model: nn.Module) -> None:
    """Re-initialise ``model.head`` and freeze all other parameters."""
    for param in model.parameters():
        param.requires_grad_(False)
    model.head.reset_parameters()
    for param in model.head.parameters():
        param.requires_grad_(True)


def frozen_backbone_eval(model: nn.Module) -> None:
    """Eval mode for everything but ``model.head`` (called after each ``train()``)."""
    model.eval()
    model.head.train()


INIT_MODES = {"head": head_only, "full": lambda model: None}


def apply_init(model: nn.Module, path: str | Path, mode: str, which: str = "best") -> Path:
    file = load_init(model, path, which)
    INIT_MODES[mode](model)
    return file
