"""Options of ``ecgka evaluate`` (light: validated before pandas, scipy or torch are imported)."""

from __future__ import annotations

from typing import Literal

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

    @property
    def overrides_shots(self) -> bool:
        return any(v is not None for v in (self.shot_rule, self.many, self.few))

    def shots(self, manifest_rule: ShotRule) -> ShotRule:
        """The shot rule to evaluate with: the manifest's, with this config's fields over it."""
        rule = self.shot_rule or manifest_rule.rule
        base = manifest_rule.model_dump() if rule == manifest_rule.rule else {}
        cuts = {k: v for k, v in (("many", self.many), ("few", self.few)) if v is not None}
        return validate_config(ShotRule, {**base, "rule": rule, **cuts}, "evaluate shot rule override")
