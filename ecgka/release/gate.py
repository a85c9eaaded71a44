"""The promotion gate: rules in the style of MLflow's ``MetricThreshold``, checked candidate vs champion.

A rule names a metric (dotted path into metrics.json) and which direction is better. The *gain* is the
candidate's change in the good direction (``cand - base`` when higher is better, ``base - cand`` when lower
is). ``min_absolute_change``: gain >= it; ``min_relative_change``: gain / |base| >= it; negative values
are tolerances ("not worse than"). ``ci_excludes_loss``: the paired subject-bootstrap CI of the gain lies
above the tolerated loss (its lower bound >= min(0, min_absolute_change)), a non-inferiority test. A
metric that is undefined for either model fails its rule: the gate never passes what it cannot check.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import model_validator

from ecgka.config import ConfigModel, load_config
from ecgka.release.paired import PairedPredictions, metric_value, paired_ci

DEFAULT_GATE = Path(__file__).resolve().parents[2] / "configs" / "gate" / "default.yaml"


class GateRule(ConfigModel):
    metric: str
    greater_is_better: bool
    min_absolute_change: float | None = None
    min_relative_change: float | None = None
    ci_excludes_loss: bool = False

    @model_validator(mode="after")
    def _has_threshold(self) -> GateRule:
        if self.min_absolute_change is None and self.min_relative_change is None and not self.ci_excludes_loss:
            raise ValueError(f"rule {self.metric}: give min_absolute_change, min_relative_change or ci_excludes_loss")
        return self


class GateConfig(ConfigModel):
    """The gate: every rule must pass. ``split``: where champion and candidate are compared."""

    rules: list[GateRule]
    split: str = "test"
    n_boot: int = 1000
    seed: int = 0
    level: float = 0.95


def load_gate(path: str | Path | None = None, overrides: list[str] | None = None) -> GateConfig:
    return load_config(GateConfig, str(path or DEFAULT_GATE), overrides or [])


def _failures(rule: GateRule, gain: float, relative: float | None, ci: dict | None) -> list[str]:
    out = []
    if rule.min_absolute_change is not None and gain < rule.min_absolute_change:
        out.append(f"change {gain:+.4g} is below the minimum absolute change {rule.min_absolute_change:+.4g} "
                   f"(short by {rule.min_absolute_change - gain:.4g})")
    if rule.min_relative_change is not None and (relative is None or relative < rule.min_relative_change):
        rel = "undefined (baseline 0)" if relative is None else f"{relative:+.2%}"
        out.append(f"relative change {rel} is below the minimum relative change {rule.min_relative_change:+.2%}")
    if ci is not None:
        floor = min(0.0, rule.min_absolute_change or 0.0)
        if ci["lower"] is None:
            out.append("the bootstrap CI of the change is undefined (too few valid replicates)")
        elif ci["lower"] < floor:
            out.append(f"the {ci['level']:.0%} CI of the change [{ci['lower']:+.4g}, {ci['upper']:+.4g}] does not "
                       f"exclude a loss beyond {floor:+.4g}")
    return out


def check_rule(rule: GateRule, base: dict, cand: dict, paired: PairedPredictions | None,
               cfg: GateConfig) -> dict[str, Any]:
    """One rule's result: values, gain, relative gain, CI, passed and the reasons it failed."""
    b, c = metric_value(base, rule.metric), metric_value(cand, rule.metric)
    result: dict[str, Any] = {**rule.model_dump(), "champion": b, "challenger": c}
    if b is None or c is None:
        who = " and ".join(n for n, v in (("champion", b), ("challenger", c)) if v is None)
        return {**result, "passed": False, "reasons": [f"{rule.metric} is undefined for the {who}"]}
    sign = 1.0 if rule.greater_is_better else -1.0
    gain = sign * (c - b)
    relative = gain / abs(b) if b else None
    ci = None
    if rule.ci_excludes_loss:
        ci = paired_ci(rule.metric, paired, base, cand, sign=sign, n_boot=cfg.n_boot, seed=cfg.seed,
                       level=cfg.level) if paired is not None else {"lower": None, "level": cfg.level}
    reasons = _failures(rule, gain, relative, ci)
    return {**result, "change": c - b, "gain": gain, "relative_gain": relative, "ci": ci,
            "passed": not reasons, "reasons": reasons}


def apply_gate(cfg: GateConfig, base: dict, cand: dict, paired: PairedPredictions | None = None) -> dict[str, Any]:
    """The gate's decision: ``{"promote", "rules": [...], "failed": [metric: reason, ...]}``."""
    rules = [check_rule(r, base, cand, paired, cfg) for r in cfg.rules]
    failed = [f"{r['metric']}: {'; '.join(r['reasons'])}" for r in rules if not r["passed"]]
    return {"promote": not failed, "rules": rules, "failed": failed}
