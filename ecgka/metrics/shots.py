"""Few-shot regions: bin labels by index, count training samples per bin, split test errors by shot group.

Bins are computed by index, ``round((y - lo) / width)``, never by comparing floats with bin edges, so that
grid values (4.1 mmol/L stored as float32 4.0999999) land in their own bin.

Two rules assign a bin to a group from its training count ``c``:
- ``relative`` (the Dist Loss paper, ECG-Ka-DIR): many if ``c > many * n_max``, few if ``c < few * n_max``,
  median otherwise (defaults many=0.5, few=0.15; ``n_max`` is the largest training bin count);
- ``absolute`` (the DIR rule for ages): many if ``c > many``, few if ``c < few`` (defaults 100 and 20).
A test label whose bin holds no training sample has ``c = 0`` and is few-shot under both rules.
"""

from __future__ import annotations

import numpy as np

from ecgka.metrics.regression import error_summary
from ecgka.registry import look_up_option

GROUPS = ("many", "median", "few")
DEFAULT_CUTS = {"relative": (0.5, 0.15), "absolute": (100.0, 20.0)}


def bin_index(values, lo: float = 0.0, width: float = 0.1) -> np.ndarray:
    """Bin index of each value: ``round((y - lo) / width)`` (half to even, as Python's ``round``)."""
    values = np.asarray(values, dtype=np.float64)
    return np.rint((values - lo) / width).astype(np.int64)


def bin_counts(values, lo: float = 0.0, width: float = 0.1, n_bins: int | None = None) -> np.ndarray:
    """Number of values per bin index (index 0 is ``lo``); values below ``lo`` are an error."""
    idx = bin_index(values, lo, width)
    if idx.size and idx.min() < 0:
        raise ValueError(f"label {np.min(values)} lies below the first bin (lo={lo})")
    return np.bincount(idx, minlength=n_bins or 0)


def resolve_cuts(rule: str, many: float | None, few: float | None) -> tuple[float, float]:
    """The (many, few) cut-offs of a rule, with the rule's defaults where not given."""
    rule = look_up_option(rule, list(DEFAULT_CUTS), "shot rule")
    default_many, default_few = DEFAULT_CUTS[rule]
    return (default_many if many is None else many, default_few if few is None else few)


def group_of_counts(counts, rule: str = "relative", many: float | None = None, few: float | None = None,
                    n_max: float | None = None) -> np.ndarray:
    """The shot group name ("many"/"median"/"few") of each training count."""
    counts = np.asarray(counts, dtype=np.float64)
    many, few = resolve_cuts(rule, many, few)
    if rule == "relative":
        n_max = float(np.max(counts)) if n_max is None else float(n_max)
        many, few = many * n_max, few * n_max
    return np.where(counts > many, "many", np.where(counts < few, "few", "median"))


def shot_groups(counts, rule: str = "relative", many: float | None = None,
                few: float | None = None) -> dict[str, list[int]]:
    """Bin indices of each group among the bins that hold training samples (the manifest's layout)."""
    counts = np.asarray(counts)
    groups = group_of_counts(counts, rule, many, few)
    return {g: [int(i) for i in np.flatnonzero((groups == g) & (counts > 0))] for g in GROUPS}


def assign_groups(labels, train_counts, lo: float, width: float, rule: str = "relative",
                  many: float | None = None, few: float | None = None) -> np.ndarray:
    """Shot group of each label from the training counts of its bin (0 outside the counted range)."""
    train_counts = np.asarray(train_counts)
    idx = bin_index(labels, lo, width)
    inside = (idx >= 0) & (idx < train_counts.size)
    count = np.where(inside, train_counts[np.clip(idx, 0, max(train_counts.size - 1, 0))], 0)
    n_max = float(train_counts.max()) if train_counts.size else 0.0
    return group_of_counts(count, rule, many, few, n_max=n_max)


def shot_metrics_from_counts(preds, labels, train_counts, lo: float = 0.0, bin_width: float = 0.1,
                             rule: str = "relative", many: float | None = None,
                             few: float | None = None) -> dict:
    """Errors for all samples and for each shot group given training bin counts (index 0 at ``lo``)."""
    preds = np.asarray(preds, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels, dtype=np.float64).reshape(-1)
    groups = assign_groups(labels, train_counts, lo, bin_width, rule, many, few)
    bins = bin_index(labels, lo, bin_width)
    result = {"all": error_summary(preds, labels, bins)}
    for name in GROUPS:
        mask = groups == name
        result[name] = error_summary(preds[mask], labels[mask], bins[mask])
    return result


def shot_metrics(preds, labels, train_labels, rule: str = "relative", bin_width: float = 0.1,
                 many: float | None = None, few: float | None = None, lo: float | None = None) -> dict:
    """``{"all", "many", "median", "few"}``, each with mae, mse, gm, n and the balanced variants.

    ``many``/``few`` default to the rule's cut-offs (relative 0.5/0.15 of n_max, absolute 100/20).
    ``lo`` (the first bin's value) defaults to 0, which gives the same bins as any multiple of the width.
    An empty group has n = 0 and null values.
    """
    lo = 0.0 if lo is None else lo
    labels = np.asarray(labels, dtype=np.float64).reshape(-1)
    train_labels = np.asarray(train_labels, dtype=np.float64).reshape(-1)
    low = min(float(train_labels.min(initial=lo)), float(labels.min(initial=lo)))
    if low < lo - bin_width / 2:
        lo = lo - bin_width * np.ceil((lo - low) / bin_width)
    counts = bin_counts(train_labels, lo, bin_width)
    return shot_metrics_from_counts(preds, labels, counts, lo, bin_width, rule, many, few)
