"""Evaluation of a trained run: predictions of a split and its few-shot and clinical metrics.

Re-exported lazily: ``ecgka evaluate`` validates its options before pandas, scipy or torch are imported.
"""

from __future__ import annotations

from ecgka.lazy import lazy_exports

_EXPORTS = {
    "EvalConfig": "ecgka.evaluation.config",
    "compute_metrics": "ecgka.evaluation.evaluate",
    "evaluate_run": "ecgka.evaluation.evaluate",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
