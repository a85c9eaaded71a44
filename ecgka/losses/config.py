"""The YAML ``method:`` section: ``{name, params: {...}, dist_loss: null | {...}}``, fully typed at load time.

``params`` is validated into the method's own parameter model (``ecgka.losses.options``) when the config
is loaded, so an unknown key is reported before any data is opened, with the valid keys. Dist Loss options
have one spelling, ``method.dist_loss``: for ``name: dist_loss`` they are the method's options (defaults
when absent); for any other method they add the Dist Loss distribution term.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, SerializeAsAny, model_validator

from ecgka.config import ConfigModel
from ecgka.losses.methods import METHODS, display_name
from ecgka.losses.options import DistLossOptions, NoParams


def _params_model(name: str, params: Any) -> ConfigModel:
    """``params`` validated into the parameter model of method ``name`` (a one-line error otherwise)."""
    spec = METHODS.get(name)
    if isinstance(params, spec.params):
        return params
    params = dict(params or {})
    valid = list(spec.params.model_fields)
    unknown = sorted(set(params) - set(valid))
    if unknown:
        where = ("Dist Loss options go under method.dist_loss" if spec.is_dist_loss
                 else f"valid: {', '.join(valid)}")
        raise ValueError(f"unknown parameter(s) {', '.join(unknown)} for method {name!r} ({where})")
    return spec.params.model_validate(params)


class MethodConfig(ConfigModel):
    """Which imbalanced-regression method to train with, its parameters, and optional Dist Loss."""

    name: str = "vanilla"
    params: SerializeAsAny[ConfigModel] = Field(default_factory=NoParams)
    dist_loss: DistLossOptions | None = None

    @model_validator(mode="before")
    @classmethod
    def _typed(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        name = METHODS.get(str(data.get("name", "vanilla"))).name  # unknown name: "did you mean"
        data["params"] = _params_model(name, data.get("params"))
        if METHODS.get(name).is_dist_loss and data.get("dist_loss") is None:
            data["dist_loss"] = DistLossOptions()
        return data

    @property
    def with_dist_loss(self) -> bool:
        return self.dist_loss is not None

    @property
    def display_name(self) -> str:
        """e.g. "LDS + Dist Loss" (the paper's naming)."""
        return display_name(self.name, self.with_dist_loss)
