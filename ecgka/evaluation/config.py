"""Options of ``ecgka evaluate`` (light: validated before pandas, scipy or torch are imported)."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import field_validator

from ecgka.config import ConfigModel, validate_config
from ecgka.labels import ShotRule


class EvalConfig(ConfigModel):
    """Options of ``ecgka evaluate`` (all overridable as key=value)."""

    checkpoint: Literal["best", "last"] = "best"
    device: Literal["run", "auto", "cpu", "cuda"] = "run"  # "run": the device the run was trained with
    shot_rule: Literal["relative", "absolute"] | None = None  # None: the dataset manifest's rule
    many: float | None = None  # None: the manifest's cut-off (or the default of an overriding rule)
    few: float | None = None
    target_sensitivity: float = 0.9
    n_boot: int = 1000
    seed: int = 0
    calibration_width: float = 0.5
    # per condition (hypo, hyper), each in (0, 1): PPV/NPV and decision curves at this prevalence; a condition
    # left out (or None) takes the training split's prevalence (metrics.json utility.prevalence.source)
    deployment_prevalence: dict[str, float] | None = None

    @field_validator("target_sensitivity")
    @classmethod
    def _sensitivity(cls, value: float) -> float:
        if not 0.0 < value <= 1.0:
            raise ValueError(f"target_sensitivity must be in (0, 1], got {value}")
        return value

    @field_validator("deployment_prevalence")
    @classmethod
    def _prevalence(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for name, p in (value or {}).items():
            if name not in ("hypo", "hyper"):
                raise ValueError(f"unknown condition {name!r} (hypo or hyper)")
            if not 0.0 < p < 1.0:
                raise ValueError(f"{name} must be in (0, 1), got {p}")
        return value

    @field_validator("n_boot")
    @classmethod
    def _n_boot(cls, value: int) -> int:
        least = min_n_boot()
        if value < least:
            raise ValueError(f"n_boot must be at least {least} (fewer replicates give confidence limits that "
                             f"move with the seed), got {value}")
        return value

    @property
    def overrides_shots(self) -> bool:
        return any(v is not None for v in (self.shot_rule, self.many, self.few))

    def shots(self, manifest_rule: ShotRule) -> ShotRule:
        """The shot rule to evaluate with: the manifest's, with this config's fields over it."""
        rule = self.shot_rule or manifest_rule.rule
        base = manifest_rule.model_dump() if rule == manifest_rule.rule else {}
        cuts = {k: v for k, v in (("many", self.many), ("few", self.few)) if v is not None}
        return validate_config(ShotRule, {**base, "rule": rule, **cuts}, "evaluate shot rule override")


MIN_N_BOOT = 200  # as ``ecgka.metrics.bootstrap.MIN_N_BOOT`` (not imported: numpy stays out of option checks)
MIN_N_BOOT_ENV = "ECGKA_MIN_N_BOOT"  # lowers the minimum for the test suite's quick evaluations only


def min_n_boot() -> int:
    """The fewest bootstrap replicates ``ecgka evaluate`` accepts: 200, or ``$ECGKA_MIN_N_BOOT`` (tests)."""
    raw = os.environ.get(MIN_N_BOOT_ENV)
    return int(raw) if raw and raw.strip().isdigit() else MIN_N_BOOT
