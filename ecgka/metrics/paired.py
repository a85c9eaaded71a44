"""Paired statistics of two models' predictions on the same rows, with subject-bootstrap CIs.

A metric is named by its dotted path into metrics.json (``regression.few.mae``,
``clinical.conditions.hyper.operating_point.test.sensitivity``, ``clinical.conditions.hypo.auroc``).
Each replicate draws subjects with replacement and evaluates *both* models on the same rows, so the CI of
the difference respects the pairing and the repeated ECGs of one patient. Used by the release gate and
the compare stage (``ecgka.release``) and by ``ecgka report --compare`` (``ecgka.report.pair``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ecgka.catalog.info import DatasetInfo, LabelHistogram
from ecgka.errors import InputError
from ecgka.keys import PredCol
from ecgka.labels import GROUPS
from ecgka.metrics.bootstrap import cluster_bootstrap_indices
from ecgka.metrics.clinical import CONDITIONS, auroc, binary_stats
from ecgka.metrics.regression import gm, mae, mse

Statistic = Callable[[np.ndarray], "float | None"]
REGRESSION_STATS = {"mae": mae, "mse": mse, "gm": gm}
BINARY_STATS = ("sensitivity", "specificity", "ppv", "npv")
# the confusion-table cells a binary statistic is computed on (its number of cases)
_CASES = {"sensitivity": ("tp", "fn"), "specificity": ("tn", "fp"), "ppv": ("tp", "fp"), "npv": ("tn", "fn")}


def metric_cases(metrics: dict, path: str) -> int | None:
    """How many cases the metric at ``path`` is computed on (samples of a regression group, positives of a
    sensitivity, negatives of a specificity, flagged cases of a PPV, ..., the rarer class of an AUROC)."""
    parts = path.split(".")
    node: object = metrics
    for part in parts[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
    if not isinstance(node, dict):
        return None
    if parts[0] == "regression":
        n = node.get("n")
    elif parts[-1] in _CASES:
        cells = [node.get(c) for c in _CASES[parts[-1]]]
        n = None if any(c is None for c in cells) else sum(cells)
    elif parts[-1] == "auroc":
        n, pos = node.get("n"), node.get("n_positive")
        n = None if n is None or pos is None else min(pos, n - pos)
    else:
        n = None
    return None if n is None else int(n)


def metric_value(metrics: dict, path: str) -> float | None:
    """The value at a dotted path of metrics.json (None when absent or null)."""
    node = metrics
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return float(node) if isinstance(node, (int, float)) and not isinstance(node, bool) else None


@dataclass
class PairedPredictions:
    """Two models' predictions on the same rows (aligned by sample_id), the labels, subjects and groups."""

    labels: np.ndarray
    subjects: np.ndarray
    groups: np.ndarray
    base: np.ndarray
    cand: np.ndarray

    @classmethod
    def from_frames(cls, a: pd.DataFrame, b: pd.DataFrame, metrics: dict, what: str = "predictions"
                    ) -> PairedPredictions:
        """Pair two prediction tables (``ecgka.keys.PredCol`` columns) on sample_id; ``metrics`` (the
        candidate's metrics.json) gives the label grid and the training counts of the shot groups."""
        sid = PredCol.SAMPLE_ID.value
        merged = a.merge(b[[sid, PredCol.PREDICTION.value]], on=sid, suffixes=("_base", "_cand"))
        if len(merged) != len(a) or len(merged) != len(b):
            raise InputError(f"{what}: not the same rows ({len(a)} and {len(b)}, {len(merged)} shared)")
        labels = merged[PredCol.LABEL.value].to_numpy(np.float64)
        grid = DatasetInfo.from_dict(metrics["dataset"], what=f"{what} metrics").grid
        counts = LabelHistogram.from_dict(metrics["shots"]["train_bin_counts"], "shots.train_bin_counts").array
        return cls(labels, merged[PredCol.SUBJECT_ID.value].to_numpy(), grid.assign_groups(labels, counts),
                   merged[f"{PredCol.PREDICTION.value}_base"].to_numpy(np.float64),
                   merged[f"{PredCol.PREDICTION.value}_cand"].to_numpy(np.float64))

    @classmethod
    def from_files(cls, base: Path, cand: Path, metrics: dict) -> PairedPredictions:
        return cls.from_frames(pd.read_parquet(base), pd.read_parquet(cand), metrics, f"{base} and {cand}")


def _regression(parts: list[str], data: PairedPredictions, preds: np.ndarray) -> Statistic | None:
    if len(parts) != 3 or parts[1] not in ("all", *GROUPS) or parts[2] not in REGRESSION_STATS:
        return None
    fn, mask = REGRESSION_STATS[parts[2]], np.ones(len(preds), bool) if parts[1] == "all" else data.groups == parts[1]

    def stat(idx: np.ndarray) -> float | None:
        keep = idx[mask[idx]]
        return fn(preds[keep], data.labels[keep]) if keep.size else None
    return stat


def _clinical(parts: list[str], data: PairedPredictions, preds: np.ndarray, metrics: dict) -> Statistic | None:
    if len(parts) < 4 or parts[1] != "conditions" or parts[2] not in CONDITIONS:
        return None
    cond, rest = CONDITIONS[parts[2]], parts[3:]
    truth = cond.positive(data.labels)
    if rest == ["auroc"]:
        score = cond.score(preds)
        return lambda idx: auroc(score[idx], truth[idx])
    if rest[0] == "at_threshold" and len(rest) == 2 and rest[1] in BINARY_STATS:
        flagged = cond.positive(preds)
    elif rest[:2] == ["operating_point", "test"] and len(rest) == 3 and rest[2] in BINARY_STATS:
        cut = metric_value(metrics, f"clinical.conditions.{cond.name}.operating_point.threshold")
        if cut is None:
            return lambda idx: None
        flagged = preds <= cut if cond.low else preds >= cut
    else:
        return None
    return lambda idx: binary_stats(flagged[idx], truth[idx])[rest[-1]]


def statistic(path: str, data: PairedPredictions, preds: np.ndarray, metrics: dict) -> Statistic:
    """The metric at ``path`` of ``preds`` on rows ``idx`` (the operating point comes from ``metrics``)."""
    parts = path.split(".")
    found = (_regression(parts, data, preds) if parts[0] == "regression"
             else _clinical(parts, data, preds, metrics) if parts[0] == "clinical" else None)
    if found is None:
        raise InputError(f"metric {path!r}: no paired bootstrap for it (supported: regression.<all|many|median|few>."
                         f"<mae|mse|gm>, clinical.conditions.<name>.auroc|at_threshold.<stat>|operating_point.test.<stat>)")
    return found


def paired_ci(path: str, data: PairedPredictions, base_metrics: dict, cand_metrics: dict, *, sign: float = 1.0,
              n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """Percentile CI of ``sign * (candidate - baseline)`` over paired subject-bootstrap replicates."""
    fb = statistic(path, data, data.base, base_metrics)
    fc = statistic(path, data, data.cand, cand_metrics)
    values = []
    for idx in cluster_bootstrap_indices(data.subjects, n_boot, seed):
        b, c = fb(idx), fc(idx)
        if b is not None and c is not None and np.isfinite(b) and np.isfinite(c):
            values.append(sign * (c - b))
    alpha = (1 - level) / 2
    ok = len(values) >= max(1, n_boot // 2)
    lo, hi = np.quantile(values, [alpha, 1 - alpha]) if ok else (None, None)
    return {"lower": None if lo is None else float(lo), "upper": None if hi is None else float(hi), "level": level,
            "n_boot": n_boot, "n_valid": len(values), "seed": seed, "unit": "subject", "paired": True}
