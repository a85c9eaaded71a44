"""Typed method configs: ``{name, params: {...}, dist_loss: null | {...}}`` (YAML ``method:`` section)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from ecgka.config import ConfigModel
from ecgka.registry import look_up_option


class DistLossOptions(ConfigModel):
    """Options of Dist Loss (the ``dist_loss`` method's params, or the ``dist_loss:`` mapping added to a
    method). Defaults are the released code's, with the documented defects repaired."""

    base: Literal["l1", "l2", "focal_l1", "huber"] = "l2"
    loss_weight: float = 1.0
    sorter: str = "soft"
    regularization_strength: float = Field(0.1, gt=0)
    rounding: str = "official"
    bw_method: float = Field(0.5, gt=0)
    reweight: Literal["inverse", "none"] = "inverse"
    clip: tuple[float, float] = (5, 1000)
    weight_alignment: Literal["pseudo_label", "batch_order"] = "pseudo_label"
    weight_sample_term: bool = True

    @field_validator("sorter")
    @classmethod
    def _known_sorter(cls, value: str) -> str:
        from ecgka.losses.sorting import SORTERS

        return look_up_option(value, SORTERS.names(), "sorter")

    @field_validator("rounding")
    @classmethod
    def _known_rounding(cls, value: str) -> str:
        from ecgka.losses.distribution import ROUNDINGS

        return look_up_option(value, ROUNDINGS.names(), "rounding")


class MethodConfig(ConfigModel):
    """Which imbalanced-regression method to train with, its parameters, and optional Dist Loss."""

    name: str = "vanilla"
    params: dict[str, Any] = Field(default_factory=dict)
    dist_loss: DistLossOptions | None = None

    @field_validator("name")
    @classmethod
    def _known_method(cls, value: str) -> str:
        from ecgka.losses.registry import list_losses

        return look_up_option(value, list_losses(), "loss method")

    @property
    def display_name(self) -> str:
        """e.g. "LDS + Dist Loss" (the paper's naming)."""
        from ecgka.losses.registry import display_name

        return display_name(self.name, self.dist_loss is not None)

    def build(self, train_labels, label_range, batch_size: int):
        """The criterion for this config (``create_loss``)."""
        from ecgka.losses.registry import create_loss

        dist = None if self.dist_loss is None else self.dist_loss.model_dump()
        return create_loss(self.name, train_labels=train_labels, label_range=label_range,
                           batch_size=batch_size, dist_loss=dist, **self.params)
