"""The model name table and constructor (imports torch): ``create_model``, ``count_parameters``."""

from __future__ import annotations

from typing import Any

from torch import nn

from ecgka.models.net1d import Net1D
from ecgka.models.options import model_kwargs
from ecgka.models.resnet import ResNet
from ecgka.names import NameTable

MODELS: NameTable = NameTable("model")


@MODELS.register("net1d")
def _net1d(in_channels: int = 1, num_outputs: int = 1, **kwargs: Any) -> nn.Module:
    return Net1D(in_channels=in_channels, num_outputs=num_outputs, **kwargs)


@MODELS.register("resnet50")
def _resnet50(in_channels: int = 3, num_outputs: int = 1, **kwargs: Any) -> nn.Module:
    return ResNet(in_channels=in_channels, num_outputs=num_outputs, **kwargs)


def list_models() -> list[str]:
    return MODELS.names()


def create_model(name: str, preset: str | None = None, in_channels: int | None = None, num_outputs: int = 1,
                 **overrides: Any) -> nn.Module:
    """Build a registered model; unknown names/presets raise a ConfigError listing the valid ones.
    ``in_channels=None``: the model's own default (net1d 1 lead, resnet50 3 colour channels)."""
    factory = MODELS.get(name)
    channels = {} if in_channels is None else {"in_channels": in_channels}
    try:
        return factory(num_outputs=num_outputs, **channels, **model_kwargs(name, preset, **overrides))
    except TypeError as exc:
        from ecgka.errors import ConfigError

        raise ConfigError(f"model {name!r}: {exc}") from None


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
