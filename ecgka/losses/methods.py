"""The method catalogue: name, paper name, typed parameters and (lazily imported) builder of each method.

Light on purpose (no torch): configs are validated against it when they are loaded. The builders live in
``ecgka.losses.factory``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ecgka.config import ConfigModel
from ecgka.losses.options import (
    BalancedMSEParams,
    ConRParams,
    FDSParams,
    LDSParams,
    NoParams,
    RankSimParams,
    VanillaParams,
)
from ecgka.names import NameTable


@dataclass(frozen=True)
class MethodSpec:
    name: str
    display_name: str  # the paper's name
    params: type[ConfigModel]
    # the method is Dist Loss itself: ``method.dist_loss`` holds its options (default options if absent)
    is_dist_loss: bool = False


METHODS: NameTable[MethodSpec] = NameTable("loss method")

for _spec in (
    MethodSpec("vanilla", "Vanilla", VanillaParams),
    MethodSpec("lds", "LDS", LDSParams),
    MethodSpec("fds", "FDS", FDSParams),
    MethodSpec("ranksim", "RankSim", RankSimParams),
    MethodSpec("conr", "ConR", ConRParams),
    MethodSpec("balanced_mse", "Balanced MSE", BalancedMSEParams),
    MethodSpec("dist_loss", "Dist Loss", NoParams, is_dist_loss=True),
):
    METHODS.register(_spec.name)(_spec)


def list_losses() -> list[str]:
    """Names of the registered methods."""
    return METHODS.names()


def display_name(name: str, with_dist_loss: bool = False) -> str:
    """The paper's name of a method, e.g. ``display_name("lds", True) == "LDS + Dist Loss"``."""
    spec = METHODS.get(name)
    return spec.display_name + (" + Dist Loss" if with_dist_loss and not spec.is_dist_loss else "")
