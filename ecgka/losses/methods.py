"""The method catalogue: name, paper name, typed parameters and (lazily imported) builder of each method.

The one home of a method's display name (:func:`display_name`): run.json, the criteria and the report's
tables all take it from here; :data:`PAPER_ORDER` is the order of the paper's tables. Light on purpose (no
torch): configs are validated against it when they are loaded. The builders live in
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


# the baselines in the order of the paper's tables (each one's "+ Dist Loss" row follows it)
PAPER_ORDER = ("vanilla", "lds", "fds", "ranksim", "conr", "balanced_mse")
WITH_DIST_LOSS = " + Dist Loss"


def display_name(name: str, with_dist_loss: bool = False) -> str:
    """The paper's name of a method, e.g. ``display_name("lds", True) == "LDS + Dist Loss"``; a name the
    catalogue does not know (a run of another ecgka) is shown as it is."""
    spec = METHODS.get(name) if name in METHODS else None
    if spec is None:
        return name + (WITH_DIST_LOSS if with_dist_loss else "")
    return spec.display_name + (WITH_DIST_LOSS if with_dist_loss and not spec.is_dist_loss else "")
