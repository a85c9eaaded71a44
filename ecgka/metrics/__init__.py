"""Metrics as pure functions on arrays, all taking ``(preds, labels, ...)``: regression errors, few-shot
groups (binned by :class:`ecgka.labels.LabelGrid`), clinical detection, bootstrap."""

from ecgka.metrics.bootstrap import bootstrap_ci, cluster_bootstrap_indices
from ecgka.metrics.clinical import (
    CONDITIONS,
    K_RANGES,
    Condition,
    WeightedAuroc,
    auroc,
    binary_stats,
    bland_altman,
    calibration_by_bin,
    clinical_metrics,
    condition_metrics,
    mae_by_range,
    operating_point,
    threshold_for_sensitivity,
)
from ecgka.metrics.regression import (
    balanced_gm,
    balanced_mae,
    balanced_mse,
    error_summary,
    geometric_mean,
    gm,
    mae,
    mse,
)
from ecgka.metrics.shots import shot_metrics, shot_metrics_from_counts

__all__ = [
    "CONDITIONS", "K_RANGES", "Condition", "auroc", "balanced_gm", "balanced_mae", "balanced_mse",
    "binary_stats", "bland_altman", "bootstrap_ci", "calibration_by_bin", "clinical_metrics",
    "cluster_bootstrap_indices", "condition_metrics", "error_summary", "geometric_mean", "gm", "mae",
    "mae_by_range", "mse", "operating_point", "shot_metrics", "shot_metrics_from_counts",
    "threshold_for_sensitivity", "WeightedAuroc",
]
