"""Model registry: ``create_model(name, preset=None, in_channels=None, num_outputs=1, **overrides)``.

A model exposes ``feature_dim``, ``forward_features(x [B, C, T]) -> [B, feature_dim]``, ``head`` (the final
``nn.Linear``) and ``forward(x) -> [B]`` (docs/contracts.md, "Models").
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ecgka.models.net1d import Net1D
from ecgka.models.presets import DEFAULT_NET1D_PRESET, DEFAULT_RESNET_PRESET, NET1D_PRESETS, RESNET_PRESETS
from ecgka.models.resnet import ResNet
from ecgka.names import NameTable, look_up_option

MODELS: NameTable = NameTable("model")
PRESETS: dict[str, dict[str, dict[str, Any]]] = {"net1d": NET1D_PRESETS, "resnet50": RESNET_PRESETS}
DEFAULT_PRESETS: dict[str, str] = {"net1d": DEFAULT_NET1D_PRESET, "resnet50": DEFAULT_RESNET_PRESET}


@MODELS.register("net1d")
def _net1d(in_channels: int = 1, num_outputs: int = 1, **kwargs: Any) -> nn.Module:
    return Net1D(in_channels=in_channels, num_outputs=num_outputs, **kwargs)


@MODELS.register("resnet50")
def _resnet50(in_channels: int = 3, num_outputs: int = 1, **kwargs: Any) -> nn.Module:
    return ResNet(in_channels=in_channels, num_outputs=num_outputs, **kwargs)


def list_models() -> list[str]:
    return MODELS.names()


def list_presets(name: str) -> list[str]:
    return sorted(PRESETS.get(look_up_option(name, list_models(), "model"), {}))


def model_kwargs(name: str, preset: str | None = None, **overrides: Any) -> dict[str, Any]:
    """The resolved constructor arguments of ``name`` with ``preset`` (default preset if None)."""
    presets = PRESETS.get(look_up_option(name, list_models(), "model"), {})
    preset = preset or DEFAULT_PRESETS.get(name)
    base = dict(presets[look_up_option(preset, list(presets), f"{name} preset")]) if preset else {}
    return {**base, **overrides}


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


__all__ = ["Net1D", "ResNet", "create_model", "list_models", "list_presets", "model_kwargs", "count_parameters"]
