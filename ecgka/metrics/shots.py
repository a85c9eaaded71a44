"""Test errors split by shot group: all, many, median and few.

Bins, training counts and shot groups come from :class:`ecgka.labels.LabelGrid` and its
:class:`~ecgka.labels.ShotRule` (the one home of the bin rule, its half-way rule and the shot cut-offs).
A test label whose bin holds no training sample is few-shot under both rules; an empty group is
reported with ``n = 0`` and null values.
"""

from __future__ import annotations

import numpy as np

from ecgka.labels import GROUPS, LabelGrid
from ecgka.metrics.regression import error_summary


def shot_metrics_from_counts(preds, labels, train_counts, grid: LabelGrid) -> dict:
    """Errors of all samples and of each shot group, given the training count of each bin of ``grid``."""
    preds = np.asarray(preds, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    groups = grid.assign_groups(labels, train_counts)
    bins = grid.bin_index(labels)
    result = {"all": error_summary(preds, labels, bins)}
    for name in GROUPS:
        mask = groups == name
        result[name] = error_summary(preds[mask], labels[mask], bins[mask])
    return result


def shot_metrics(preds, labels, train_labels, grid: LabelGrid | None = None) -> dict:
    """``{"all", "many", "median", "few"}``, each with mae, mse, gm, n and the balanced variants.

    ``grid`` (default: the potassium preset, relative rule 0.5 / 0.15 of n_max) bins the training labels
    and holds the shot rule; ``LabelGrid.preset("age")`` gives the DIR age grid with the absolute rule.
    """
    grid = grid or LabelGrid.preset("potassium")
    return shot_metrics_from_counts(preds, labels, grid.counts(np.asarray(train_labels).reshape(-1)), grid)
