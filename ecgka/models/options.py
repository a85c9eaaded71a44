"""The typed constructor options of every model, without torch: a config's ``model.overrides`` (and each
preset) are validated here when the config is loaded, so ``{dropout: 2}`` or ``{kernel_size: 0}`` is a
one-line error naming the key before any data is read or any folder written."""

from __future__ import annotations

from typing import Any

from pydantic import Field, ValidationError, model_validator

from ecgka.config import ConfigModel
from ecgka.models.presets import DEFAULT_NET1D_PRESET, DEFAULT_RESNET_PRESET, NET1D_PRESETS, RESNET_PRESETS
from ecgka.names import look_up_option


class Net1DOptions(ConfigModel):
    """``ecgka.models.Net1D``'s arguments (``in_channels`` and ``num_outputs`` come from the data)."""

    base_filters: int = Field(32, ge=1)
    ratio: float = Field(1.0, gt=0)
    filter_list: list[int] = Field([32, 64, 128], min_length=1)
    m_blocks_list: list[int] = Field([2, 2, 2], min_length=1)
    kernel_size: int = Field(5, ge=1)
    stride: int = Field(2, ge=1)
    groups_width: int = Field(32, ge=1)
    head_hidden: int | None = Field(None, ge=1)
    use_bn: bool = True
    dropout: float = Field(0.5, ge=0, lt=1)

    @model_validator(mode="after")
    def _check(self) -> Net1DOptions:
        if any(c < 1 for c in self.filter_list) or any(b < 1 for b in self.m_blocks_list):
            raise ValueError("filter_list and m_blocks_list hold positive integers")
        if len(self.filter_list) != len(self.m_blocks_list):
            raise ValueError(f"filter_list ({len(self.filter_list)} stages) and m_blocks_list "
                             f"({len(self.m_blocks_list)}) must have the same length")
        return self


class ResNetOptions(ConfigModel):
    """``ecgka.models.ResNet``'s arguments."""

    layers: tuple[int, ...] = Field((3, 4, 6, 3), min_length=1)
    base_width: int = Field(64, ge=1)

    @model_validator(mode="after")
    def _check(self) -> ResNetOptions:
        if any(n < 1 for n in self.layers):
            raise ValueError("layers holds positive block counts")
        return self


MODEL_OPTIONS: dict[str, type[ConfigModel]] = {"net1d": Net1DOptions, "resnet50": ResNetOptions}
PRESETS: dict[str, dict[str, dict[str, Any]]] = {"net1d": NET1D_PRESETS, "resnet50": RESNET_PRESETS}
DEFAULT_PRESETS: dict[str, str] = {"net1d": DEFAULT_NET1D_PRESET, "resnet50": DEFAULT_RESNET_PRESET}


def list_presets(name: str) -> list[str]:
    return sorted(PRESETS.get(look_up_option(name, list(MODEL_OPTIONS), "model"), {}))


def model_kwargs(name: str, preset: str | None = None, **overrides: Any) -> dict[str, Any]:
    """The resolved constructor arguments of ``name`` with ``preset`` (default preset if None)."""
    presets = PRESETS.get(look_up_option(name, list(MODEL_OPTIONS), "model"), {})
    preset = preset or DEFAULT_PRESETS.get(name)
    base = dict(presets[look_up_option(preset, list(presets), f"{name} preset")]) if preset else {}
    return {**base, **overrides}


def check_model_options(name: str, preset: str | None, overrides: dict[str, Any]) -> dict[str, Any]:
    """The preset's arguments with ``overrides``, validated against the model's typed options; raises
    ValueError naming the key (``overrides.dropout: ...``) or a ConfigError for an unknown model or preset."""
    kwargs = model_kwargs(name, preset, **overrides)
    options = MODEL_OPTIONS[look_up_option(name, list(MODEL_OPTIONS), "model")]
    try:
        options.model_validate(kwargs)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = ".".join(str(p) for p in error["loc"])
        msg = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            msg = f"{name} has no option {error['loc'][-1]!r} (options: {', '.join(options.model_fields)})"
        raise ValueError(f"overrides.{loc}: {msg}" if loc else f"overrides: {msg}") from None
    return kwargs


__all__ = ["MODEL_OPTIONS", "Net1DOptions", "ResNetOptions", "check_model_options", "list_presets", "model_kwargs"]
