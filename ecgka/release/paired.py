"""The gate's view of the paired statistics (``ecgka.metrics.paired``: two models' predictions on the same
test rows, with subject-bootstrap CIs): which metric paths of metrics.json a gate rule may name.
"""

from __future__ import annotations

from ecgka.labels import GROUPS
from ecgka.metrics.clinical import CONDITIONS
from ecgka.metrics.paired import (  # noqa: F401  (re-exported: the gate and the compare stage use them)
    BINARY_STATS,
    REGRESSION_STATS,
    PairedPredictions,
    Statistic,
    metric_cases,
    metric_value,
    paired_ci,
    statistic,
)

# The metric paths of metrics.json a gate rule may name (those with a paired bootstrap): the one
# declared table that ``ecgka run --check`` and ``load_gate`` validate rule metrics against.
GATE_METRICS: tuple[str, ...] = (
    *(f"regression.{g}.{s}" for g in ("all", *GROUPS) for s in REGRESSION_STATS),
    *(f"clinical.conditions.{c}.auroc" for c in CONDITIONS),
    *(f"clinical.conditions.{c}.{where}.{s}" for c in CONDITIONS for where in ("at_threshold", "operating_point.test")
      for s in BINARY_STATS),
)


def check_metric_path(path: str) -> str:
    """``path`` when a gate rule may name it; else a one-line error with the nearest known paths."""
    import difflib

    if path in GATE_METRICS:
        return path
    close = difflib.get_close_matches(path, GATE_METRICS, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(f"unknown metric {path!r} (not a path of metrics.json the gate can compare){hint} "
                     f"(known: regression.<all|many|median|few>.<mae|mse|gm>, clinical.conditions.<"
                     f"{'|'.join(CONDITIONS)}>.auroc|at_threshold.<stat>|operating_point.test.<stat>)")
