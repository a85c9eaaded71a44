"""The run's conformal layer at evaluation (issue 23): fitted on the validation predictions, stored with the
run, applied to the evaluated split, and the metrics.json ``uncertainty`` block.

* The layer (``ecgka.metrics.conformal``, label-conditional) is fitted on the run's val predictions with the
  dataset description's edges and training histogram (``fit_for_dataset``), under the dataset's own shot rule
  (an evaluation's shot override changes the reported groups, not the model's layer), and written atomically
  to ``RUN/uncertainty.json`` with its ``source``: checkpoint name and SHA-256, dataset fingerprint, seed,
  split. A later evaluation reuses it while these are unchanged and refits it when one changed. Only the
  ``best`` checkpoint's layer is stored (the weights predict, the registry and the export ship).
* An evaluation on another dataset (``--allow-other-dataset``) applies the run's stored layer when it belongs
  to the evaluated weights (the model as shipped); otherwise the layer is fitted on that dataset's val and
  not stored (``source.stored`` false).
* Evaluating ``val`` itself writes the columns too, but its coverage is in-sample (the calibration set):
  ``uncertainty.in_sample`` says so and the report states it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ecgka.catalog import RunDir
from ecgka.catalog.info import DatasetInfo
from ecgka.errors import InputError
from ecgka.io import atomic_write_json
from ecgka.keys import UNCERTAINTY_COLUMNS, PredCol
from ecgka.labels import GROUPS, LabelGrid
from ecgka.metrics.clinical import CONDITIONS
from ecgka.metrics.conformal import DEFAULT_SCORE, FIT_RULE, LabelConditionalCPS, fit_for_dataset, layer_from_json
from ecgka.metrics.coverage import coverage_groups, probability_metrics, uncertainty_metrics

CALIBRATION_SPLIT = "val"
STORED_CHECKPOINT = "best"  # the weights ``ecgka predict``, the registry and the export ship: only their layer is
# stored (an evaluation of ``checkpoint=last`` fits its own without replacing it)
SOURCE_KEYS = ("checkpoint_sha256", "dataset_fingerprint", "seed", "score", "fit_rule")  # a stored layer is reused
# while equal (``score``: the conformity score asked for, ``DEFAULT_SCORE``; ``fit_rule``: ``FIT_RULE``, so a layer
# fitted by an older rule or default is refitted)


def _arrays(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    return df[PredCol.LABEL.value].to_numpy(np.float64), df[PredCol.PREDICTION.value].to_numpy(np.float64)


def fit_layer(val: pd.DataFrame, dataset: DatasetInfo, seed: int = 0, source: dict | None = None
              ) -> LabelConditionalCPS:
    """The layer fitted on a val predictions table (labels and predictions) for ``dataset``."""
    labels, preds = _arrays(val)
    return fit_for_dataset(dataset, labels, preds, seed=seed,
                           source={"split": CALIBRATION_SPLIT, "n": int(labels.size), **(source or {})})


def _matches(layer: LabelConditionalCPS, key: dict) -> bool:
    return all(layer.source.get(k) == v for k, v in key.items())


def run_layer(run_dir: RunDir, val: pd.DataFrame, dataset: DatasetInfo, checkpoint: str, checkpoint_sha256: str,
              seed: int = 0, *, own_dataset: bool = True) -> tuple[LabelConditionalCPS, bool]:
    """(the layer to evaluate with, whether a stored one was reused). On the run's own dataset: the stored
    ``uncertainty.json`` when its source matches (``SOURCE_KEYS``), else fitted
    on ``val`` and stored (for the ``best`` checkpoint only). On another dataset: the stored layer of these
    weights, else fitted, not stored."""
    key = {"checkpoint_sha256": checkpoint_sha256, "dataset_fingerprint": dataset.fingerprint, "seed": seed,
           "score": DEFAULT_SCORE, "fit_rule": FIT_RULE}
    data = run_dir.read_uncertainty()
    stored = None
    if data is not None:
        try:
            stored = layer_from_json(data, str(run_dir.uncertainty))
        except InputError:
            stored = None  # an older or damaged layer: refitted below (own dataset) and replaced
    if stored is not None:
        if own_dataset and _matches(stored, key):
            return stored, True
        if not own_dataset and stored.source.get("checkpoint_sha256") == checkpoint_sha256:
            return stored, True
    store = own_dataset and checkpoint == STORED_CHECKPOINT
    layer = fit_layer(val, dataset, seed, {"checkpoint": checkpoint, **key, "stored": store})
    if store:
        atomic_write_json(run_dir.uncertainty, layer.model_dump(mode="json"))
    return layer, False


def with_columns(df: pd.DataFrame, layer: LabelConditionalCPS) -> pd.DataFrame:
    """``df`` with the layer's interval and probability columns (float32), then its accepted-set list columns
    (``k_set_<level>``), appended after its own."""
    preds = df[PredCol.PREDICTION.value].to_numpy(np.float64)
    cols = {**layer.columns(preds), **layer.sets(preds)}
    return df.drop(columns=[c for c in cols if c in df.columns]).assign(**cols)


def columns_of(df: pd.DataFrame) -> dict[str, np.ndarray] | None:
    """The uncertainty columns present in a predictions table (None when it has none)."""
    present = {c: df[c].to_numpy(np.float64) for c in UNCERTAINTY_COLUMNS if c in df.columns}
    return present or None


def range_groups(labels, grid: LabelGrid, train_counts) -> list[tuple[str, str, np.ndarray]]:
    """(name, kind, mask) of each range coverage is reported on: ``all``, the shot groups (kind ``shot``,
    named ``many-shot`` ...), then the clinical K ranges (kind ``clinical``; potassium only)."""
    masks = coverage_groups(labels, grid, train_counts)
    out = [("all", "all", masks.pop("all"))]
    out += [(f"{g}-shot", "shot", masks.pop(g)) for g in GROUPS if g in masks]
    return out + [(name, "clinical", m) for name, m in masks.items()]


def uncertainty_block(test: pd.DataFrame, columns: dict[str, np.ndarray], layer: LabelConditionalCPS | None,
                      grid: LabelGrid, train_counts, split: str) -> dict[str, Any]:
    """metrics.json ``uncertainty``: coverage and mean width per range and level (n, Clopper-Pearson 95 % CI)
    and the event probabilities' Brier score and reliability bins, computed from the split's columns."""
    labels = test[PredCol.LABEL.value].to_numpy(np.float64)
    groups = range_groups(labels, grid, train_counts)
    kinds = {name: kind for name, kind, _ in groups}
    levels = list(layer.levels) if layer is not None else sorted(
        {float(c.rsplit("_", 1)[1]) / 100 for c in columns if c.startswith("k_lo_")})
    rows = uncertainty_metrics(labels, columns, {name: m for name, _, m in groups}, levels, layer,
                               test[PredCol.PREDICTION.value].to_numpy(np.float64))
    out = {"method": layer.method if layer is not None else None, "fitted_on": CALIBRATION_SPLIT,
           "in_sample": split == CALIBRATION_SPLIT, "levels": levels,
           "coverage": [{**r, **{k: _round(r[k]) for k in ROUNDED if k in r}, "kind": kinds[r["range"]]} for r in rows],
           "probabilities": _probabilities(labels, columns)}
    if layer is not None:
        out["layer"] = {"n_calibration": layer.n_calibration, "bins": len(layer.bins), "merges": len(layer.merged),
                        "score": layer.score, "slope": layer.slope, "score_note": layer.score_note,
                        "source": layer.source}
        at_split = with_prior(layer, labels, grid)
        if at_split is not None:
            preds = test[PredCol.PREDICTION.value].to_numpy(np.float64)
            out["probabilities_split_prior"] = _probabilities(labels, at_split.probabilities(preds))
    return out


ROUNDED = ("mean_width", "ci_lower", "ci_upper", "set_mean_length", "set_ci_lower", "set_ci_upper")  # to 6 decimals: the endpoints are float32 (and compared at 6
# decimals), the CI limits a numerical inverse; more digits would only lengthen metrics.json and the tidy table


def _round(value):
    return None if value is None else round(float(value), 6)


def _probabilities(labels, columns: dict) -> dict:
    return {name: {**p, "title": CONDITIONS[name].title} for name, p in probability_metrics(labels, columns).items()}


def with_prior(layer: LabelConditionalCPS, labels, grid: LabelGrid) -> LabelConditionalCPS | None:
    """The layer with the label distribution of ``labels`` as its prior instead of the training split's
    (None when the grids differ). The shipped probabilities are calibrated for the training prevalence; a
    split built balanced (the test split) has other prevalences, so its reliability curve is read from the
    probabilities under its own label distribution (the prior shift that PPV/NPV get by Bayes' rule)."""
    if len(layer.prior) != grid.n_bins or abs(layer.prior_lo - grid.lo) > 1e-9 or \
            abs(layer.prior_step - grid.step) > 1e-9 or not len(labels):
        return None
    counts = np.bincount(grid.clipped_index(labels), minlength=grid.n_bins).astype(np.float64)
    return LabelConditionalCPS.model_validate({**layer.model_dump(), "prior": (counts / counts.sum()).tolist()})


def split_reliability(block: dict) -> dict:
    """The reliability bins of ``uncertainty.probabilities`` (and ``probabilities_split_prior``) taken out:
    figure data, kept under metrics.json ``figures.reliability`` (``{"shipped": {condition: bins},
    "split_prior": {...}}``; left out of a report's metrics.json, as the other figures)."""
    return {key: {name: p.pop("reliability") for name, p in block[part].items() if "reliability" in p}
            for key, part in (("shipped", "probabilities"), ("split_prior", "probabilities_split_prior"))
            if part in block}
