"""The promotion gate: rules in the style of MLflow's ``MetricThreshold``, checked candidate vs champion.

A rule names a metric (dotted path into metrics.json) and which direction is better. The *gain* is the
candidate's change in the good direction (``cand - base`` when higher is better, ``base - cand`` when lower
is). ``min_absolute_change``: gain >= it; ``min_relative_change``: gain / |base| >= it; negative values
are tolerances ("not worse than"). ``ci_excludes_loss``: the paired subject-bootstrap CI of the gain lies
above the tolerated loss (its lower bound >= min(0, min_absolute_change)), a non-inferiority test. A
metric that is undefined for either model fails its rule: the gate never passes what it cannot check.

Absolute floors (MLflow's ``threshold``): the candidate's value must be >= ``threshold`` when higher is
better, <= when lower is. ``min_n``: the least number of cases the metric is computed on (positives of a
sensitivity, samples of a shot group); a rule that cannot be decided on enough cases fails.

The gate is changed only by a reviewed edit of its file: no overrides; an empty rule list, a split other
than ``test``, fewer than :data:`MIN_N_BOOT` bootstrap replicates or an unknown metric path are refused
when the file is loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from ecgka.config import ConfigModel, load_config
from ecgka.errors import ConfigError
from ecgka.io import sha256_file
from ecgka.release.paired import PairedPredictions, check_metric_path, metric_cases, metric_value, paired_ci
from ecgka.resources import CONFIGS, find_config

DEFAULT_GATE = CONFIGS / "gate" / "default.yaml"  # shipped with the package (ecgka.resources)
MIN_N_BOOT = 200  # the fewest paired bootstrap replicates a gate may use


class GateRule(ConfigModel):
    metric: str
    greater_is_better: bool
    min_absolute_change: float | None = None
    min_relative_change: float | None = None
    ci_excludes_loss: bool = False
    threshold: float | None = None  # absolute floor of the candidate's value (a ceiling when lower is better)
    min_n: int | None = Field(None, ge=1)  # the fewest cases the metric may be decided on

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        return check_metric_path(value)

    @model_validator(mode="after")
    def _has_threshold(self) -> GateRule:
        if (self.min_absolute_change is None and self.min_relative_change is None and not self.ci_excludes_loss
                and self.threshold is None):
            raise ValueError(f"rule {self.metric}: give min_absolute_change, min_relative_change, ci_excludes_loss "
                             f"or threshold")
        return self


class GateConfig(ConfigModel):
    """The gate: every rule must pass. ``split``: where champion and candidate are compared."""

    rules: list[GateRule] = Field(min_length=1)
    split: str = "test"
    n_boot: int = Field(1000, ge=MIN_N_BOOT)
    seed: int = 0
    level: float = Field(0.95, gt=0.5, lt=1.0)

    @field_validator("split")
    @classmethod
    def _test_split(cls, value: str) -> str:
        if value != "test":
            raise ValueError(f"split {value!r}: a gate decides on the test split only (the models chose their "
                             f"checkpoints and operating points on val)")
        return value


def gate_path(path: str | Path | None = None) -> Path:
    """The gate file: ``path`` (a file, or a shipped gate's name: ``default``) or the default gate."""
    return find_config(path, "gate") if path else DEFAULT_GATE


def load_gate(path: str | Path | None = None) -> GateConfig:
    """The gate of a file, checked (no overrides: a gate changes only by an edit of its file)."""
    file = gate_path(path)
    if not file.is_file():
        raise ConfigError(f"{file}: gate file not found")
    return load_config(GateConfig, str(file), [])


def gate_identity(path: str | Path | None = None) -> dict[str, str]:
    """What the registry log records of a gate: its file and the file's SHA-256."""
    file = gate_path(path)
    return {"path": str(file.resolve()), "sha256": sha256_file(file)}


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
    counts = [metric_cases(m, rule.metric) for m in (base, cand)]
    n = None if None in counts else min(counts)
    result: dict[str, Any] = {**rule.model_dump(), "champion": b, "challenger": c, "n": n}
    if b is None or c is None:
        who = " and ".join(n for n, v in (("champion", b), ("challenger", c)) if v is None)
        return {**result, "passed": False, "reasons": [f"{rule.metric} is undefined for the {who}"]}
    if rule.min_n is not None and (n is None or n < rule.min_n):
        cases = "an unknown number of" if n is None else str(n)
        return {**result, "passed": False, "reasons": [f"cannot be decided on {cases} case(s): the rule needs at "
                                                       f"least min_n={rule.min_n}"]}
    sign = 1.0 if rule.greater_is_better else -1.0
    gain = sign * (c - b)
    relative = gain / abs(b) if b else None
    ci = None
    if rule.ci_excludes_loss:
        ci = paired_ci(rule.metric, paired, base, cand, sign=sign, n_boot=cfg.n_boot, seed=cfg.seed,
                       level=cfg.level) if paired is not None else {"lower": None, "level": cfg.level}
    reasons = _failures(rule, gain, relative, ci)
    if rule.threshold is not None and (c < rule.threshold if rule.greater_is_better else c > rule.threshold):
        reasons.append(f"challenger's value {c:.4g} is {'below' if rule.greater_is_better else 'above'} the "
                       f"threshold {rule.threshold:.4g}")
    return {**result, "change": c - b, "gain": gain, "relative_gain": relative, "ci": ci,
            "passed": not reasons, "reasons": reasons}


def apply_gate(cfg: GateConfig, base: dict, cand: dict, paired: PairedPredictions | None = None) -> dict[str, Any]:
    """The gate's decision: ``{"promote", "rules": [...], "failed": [metric: reason, ...]}``."""
    rules = [check_rule(r, base, cand, paired, cfg) for r in cfg.rules]
    failed = [f"{r['metric']}: {'; '.join(r['reasons'])}" for r in rules if not r["passed"]]
    return {"promote": not failed, "rules": rules, "failed": failed}
