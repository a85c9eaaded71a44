"""``ecgka evaluate``: predict a split with a trained run and write its few-shot and clinical metrics.

Writes the run's predictions of the split (``PredCol`` columns) and its metrics.json (written last,
atomically: its presence means the evaluation is complete); the catalog (:class:`ecgka.catalog.RunDir`)
names both files. Detection operating points are fixed on the validation split, so evaluating ``test``
also predicts ``val``. The label grid, the training counts and the shot rule come from the dataset's
description (:class:`ecgka.catalog.info.DatasetInfo`, given by its kind); an explicit
``shot_rule``/``many``/``few`` overrides the rule, and metrics.json records which rule was used and where it
came from. metrics.json's ``dataset`` block is the description's JSON form (``DatasetInfo.to_dict``).

Calibrated uncertainty (issue 23, ``ecgka.evaluation.uncertainty``): the run's conformal layer is fitted on the
val predictions (stored as ``RUN/uncertainty.json``, reused while the checkpoint and dataset are unchanged),
its interval and probability columns (``ecgka.keys.UNCERTAINTY_COLUMNS``) are appended to both prediction
tables, and metrics.json gains ``uncertainty`` (coverage and width per range and level, Brier score and
reliability of the probabilities), computed from the columns of the evaluated split's table.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ecgka import __version__
from ecgka.catalog import RunDir, resolve_weights
from ecgka.catalog.info import DatasetInfo, LabelHistogram
from ecgka.data.subgroups import SUBGROUP_COLUMNS, with_subgroups
from ecgka.errors import InputError
from ecgka.evaluation import aggregates
from ecgka.evaluation.config import EvalConfig
from ecgka.evaluation.subgroups import prediction_subgroups
from ecgka.evaluation.uncertainty import (
    columns_of,
    fit_layer,
    run_layer,
    split_reliability,
    uncertainty_block,
    with_columns,
)
from ecgka.io import atomic_path, atomic_write_json, sha256_file
from ecgka.keys import SET_COLUMNS, SPLITS, UNCERTAINTY_COLUMNS, PredCol
from ecgka.labels import GROUPS, LabelGrid
from ecgka.metrics.clinical import CONDITIONS, applies_to, clinical_metrics
from ecgka.metrics.shots import shot_metrics_from_counts

SCHEMA_VERSION = 3  # 2: shots.source, train_bin_counts.step, figures.distributions.step; 3: uncertainty,
# decision curves from the conformal layer's probabilities (figures.decision_curves.*.probability)
PREDICTION_COLUMNS = tuple(c.value for c in PredCol)
RUN_KEYS = ("name", "display_name", "method", "dist_loss", "stage", "init", "dataset_fingerprint",
            "best_epoch", "selection_metric", "seed", "group", "ablation", "variant", "status")
RUN_COMPLETE = "complete"  # run.json ``status`` of a finished run (``ecgka.training.resume``)
BA_SPAN_STEPS = 30  # the Bland-Altman density covers differences of +- 30 grid steps (3 mmol/L)


def check_predictions(df: pd.DataFrame, source: str) -> pd.DataFrame:
    """The ``PredCol`` columns (and the subgroup and uncertainty columns when present), finite labels and
    predictions; a one-line InputError otherwise."""
    missing = [c for c in PREDICTION_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(f"{source}: missing columns {', '.join(missing)}")
    extra = [c for c in (*SUBGROUP_COLUMNS, *UNCERTAINTY_COLUMNS, *SET_COLUMNS) if c in df.columns]
    df = df.loc[:, [*PREDICTION_COLUMNS, *extra]].reset_index(drop=True)
    for col in (PredCol.LABEL, PredCol.PREDICTION):
        bad = ~np.isfinite(df[col.value].to_numpy(dtype=np.float64))
        if bad.any():
            raise InputError(f"{source}: column {col.value} has {int(bad.sum())} non-finite values")
    if df.empty:
        raise InputError(f"{source}: no rows")
    return df


def _clean(obj: Any) -> Any:
    """JSON-safe copy: NaN/inf become null, numpy scalars become Python numbers."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def eval_dataset(dataset: DatasetInfo, cfg: EvalConfig) -> DatasetInfo:
    """The dataset with the shot rule to evaluate with (the recorded one, unless ``cfg`` overrides it)."""
    return dataset.with_shots(cfg.shots(dataset.grid.shots)) if cfg.overrides_shots else dataset


def _shots_record(grid: LabelGrid, train: LabelHistogram, groups: np.ndarray, source: str) -> dict:
    return {**grid.shots.model_dump(mode="json"), "source": source, "n_max": train.n_max,
            "train_bin_counts": train.to_dict(), "n_per_group": {g: int(np.sum(groups == g)) for g in GROUPS}}


def _figure_aggregates(preds, labels, groups, grid: LabelGrid) -> dict:
    """The figures' aggregates; ROC curves only where the clinical conditions apply (potassium)."""
    err = preds - labels
    mean = (preds + labels) / 2.0
    span = BA_SPAN_STEPS * grid.step
    out = {
        "distributions": aggregates.distributions(preds, labels, grid),
        "few_shot_error_curve": aggregates.sorted_error_curve(np.abs(err[groups == "few"])),
        "scatter_density": aggregates.density_2d(labels, preds, (grid.lo, grid.hi), (grid.lo, grid.hi), grid),
        "bland_altman_density": aggregates.density_2d(mean, err, (grid.lo, grid.hi), (-span, span), grid),
    }
    if applies_to(grid):
        out["roc"] = {name: aggregates.roc_points(c.score(preds), c.positive(labels))
                      for name, c in CONDITIONS.items()}
    return out


def _arrays(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    return df[PredCol.PREDICTION.value].to_numpy(np.float64), df[PredCol.LABEL.value].to_numpy(np.float64)


def compute_metrics(test: pd.DataFrame, val: pd.DataFrame, dataset: DatasetInfo, cfg: EvalConfig | None = None,
                    split: str = "test", layer=None) -> dict:
    """All metrics of one evaluated split, from prediction tables and the dataset's description (pure).
    ``clinical`` is null for a label the clinical conditions are not defined for (``clinical.applies_to``).
    ``uncertainty`` comes from the uncertainty columns of ``test`` when it has them (what ``evaluate_run``
    writes), else from ``layer`` (a ``LabelConditionalCPS``), else from a layer fitted here on ``val``."""
    cfg = cfg or EvalConfig()
    test = check_predictions(test, f"{split} predictions")
    val = check_predictions(val, "val predictions")
    grid = eval_dataset(dataset, cfg).grid
    counts = dataset.train_bins.array
    preds, labels = _arrays(test)
    val_preds, val_labels = _arrays(val)
    groups = grid.assign_groups(labels, counts)
    columns = columns_of(test)
    if columns is None:
        layer = layer or fit_layer(val, dataset, cfg.seed)
        columns = layer.columns(preds)
    clinical = clinical_metrics(preds, labels, test[PredCol.SUBJECT_ID.value].to_numpy(), val_preds, val_labels,
                                grid, cfg.target_sensitivity, cfg.n_boot, cfg.seed, cfg.calibration_width) \
        if applies_to(grid) else None
    extra = _utility_calibration(preds, labels, test[PredCol.SUBJECT_ID.value].to_numpy(), val_preds, val_labels,
                                 groups, dataset, clinical, cfg, columns) if clinical is not None else {}
    figures = _figure_aggregates(preds, labels, groups, grid)
    uncertainty = uncertainty_block(test, columns, layer, grid, counts, split)
    figures["reliability"] = split_reliability(uncertainty)  # figure data, as the decision curves
    if extra:  # the decision curves are figure data: kept here, left out of the report's metrics.json
        figures["decision_curves"] = {n: c.pop("decision_curve") for n, c in extra["utility"]["conditions"].items()}
    return _clean({
        "schema_version": SCHEMA_VERSION,
        "ecgka_version": __version__,
        "split": split,
        "n": int(len(test)),
        "n_subjects": int(test[PredCol.SUBJECT_ID.value].nunique()),
        "operating_point_split": "val",
        "config": cfg.model_dump(mode="json"),
        "shots": _shots_record(grid, dataset.train_bins, groups, "override" if cfg.overrides_shots else "manifest"),
        "regression": shot_metrics_from_counts(preds, labels, counts, grid),
        "clinical": clinical,
        "subgroups": prediction_subgroups(test, groups, clinical, cfg.n_boot, cfg.seed),  # ecgka.evaluation.subgroups
        "figures": figures,
        "dataset": dataset.to_dict(),
        "uncertainty": uncertainty,
        **extra,
    })


def _utility_calibration(preds, labels, subjects, val_preds, val_labels, groups, dataset: DatasetInfo,
                         clinical: dict, cfg: EvalConfig, columns: dict | None = None) -> dict:
    """metrics.json ``utility`` (PPV/NPV at deployment prevalences, decision curves) and ``calibration_fit``
    (calibration line overall and per shot region, MAE per clinical range), potassium only. The decision
    curves use the conformal layer's ``p_hypo``/``p_hyper`` (calibrated at the training prevalence) when
    ``columns`` has them, else the val-fitted event model."""
    from ecgka.metrics.calibration import calibration_by_group, mae_by_clinical_range
    from ecgka.metrics.utility import train_prevalence, utility_metrics

    conds = {n: CONDITIONS[n] for n in ("hypo", "hyper")}
    train = {n: train_prevalence(dataset.train_bins.centres(), dataset.train_bins.array, c)
             for n, c in conds.items()}
    user = cfg.deployment_prevalence or {}  # deployment_prevalence.<condition>=p; the training split's otherwise
    declared = {n: user.get(n, train[n]) for n in conds}
    sources = {n: "declared" if n in user else "training" for n in conds}
    rules = {n: (clinical["conditions"][n].get("operating_point") or {}).get("threshold") for n in conds}
    probs = {n: (f"p_{n}", columns[f"p_{n}"], train[n]) for n in conds if f"p_{n}" in (columns or {})}
    return {"utility": utility_metrics(preds, labels, subjects, val_preds, val_labels, conds, declared, rules,
                                       cfg.n_boot, cfg.seed, declared_source=sources, train_prevalence=train,
                                       probabilities=probs),
            "calibration_fit": {**calibration_by_group(preds, labels, subjects, groups, n_boot=cfg.n_boot,
                                                       seed=cfg.seed),
                                "mae_by_range": mae_by_clinical_range(preds, labels, subjects, cfg.n_boot, cfg.seed)}}


def _predict(run_dir: Path, data_dir: Path, split: str, cfg: EvalConfig) -> pd.DataFrame:
    from ecgka.training import predict  # lazy: torch and the model zoo load only when predicting

    device = None if cfg.device == "run" else cfg.device
    return check_predictions(predict(run_dir, data_dir, split, checkpoint=cfg.checkpoint, device=device),
                             f"{run_dir} predictions of {split}")


def _write_parquet(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def _provenance(run: dict, cfg: EvalConfig, checkpoint_sha256: str) -> dict:
    """The run, the checkpoint's name and ``model.checkpoint_sha256``: the SHA-256 of the weights evaluated
    (the registry refuses metrics of other weights)."""
    return {"run": _clean({k: run.get(k) for k in RUN_KEYS if k in run}), "checkpoint": cfg.checkpoint,
            "model": {"checkpoint": cfg.checkpoint, "checkpoint_sha256": checkpoint_sha256}}


def _matches_training(run: dict, dataset: DatasetInfo) -> bool | None:
    trained_on = run.get("dataset_fingerprint")
    return None if trained_on is None else trained_on == dataset.fingerprint


def other_dataset(run: dict, dataset: DatasetInfo, data_dir: Path, allow: bool) -> str | None:
    """None when ``dataset`` is the run's training dataset (or the run does not say); else the other
    dataset's fingerprint, which names its eval folder; refused unless ``allow``."""
    trained_on, fingerprint = run.get("dataset_fingerprint"), dataset.fingerprint
    if trained_on is None or trained_on == fingerprint:
        return None
    if not allow:
        raise InputError(f"{data_dir}: dataset {fingerprint} is not the run's training dataset ({trained_on}); "
                         f"pass --allow-other-dataset to evaluate on it (written to eval/{fingerprint}/)")
    return str(fingerprint)


def check_complete(run_dir: RunDir, run: dict) -> None:
    """Only a finished run is evaluated: a run still training (or stopped) would be evaluated with the
    weights of whichever epoch was best so far, and its metrics would outlive them. One line otherwise."""
    status = run.get("status")
    if status is None or status == RUN_COMPLETE:  # None: a run.json written before statuses existed
        return
    fix = ("wait until `ecgka train` finishes (or resume it with the same command), then evaluate"
           if status == "running" else "resume it with the same `ecgka train` command, then evaluate")
    raise InputError(f"{run_dir.path}: the run is {status}, not complete: {fix}")


def _describe(run: RunDir, data: Path) -> DatasetInfo:
    """The description of ``data`` (its kind's: an ECG manifest, an age split's) under the run's config."""
    from ecgka.training.config import read_resolved_config
    from ecgka.training.sources import describe_dataset

    cfg = read_resolved_config(run.config_path) if run.is_run() else None
    if cfg is None:
        raise InputError(f"{run.path}: not a training run directory (no {RunDir.CONFIG})")
    return describe_dataset(data, cfg)


def evaluate_run(run_dir: str | Path, data_dir: str | Path, split: str = "test",
                 cfg: EvalConfig | None = None, *, allow_other_dataset: bool = False) -> dict:
    """Predict ``split`` (and val) with the run's checkpoint, write predictions and metrics.json: into
    ``eval/<split>/`` for the run's own dataset, into ``eval/<fingerprint>/<split>/`` for another one
    (only with ``allow_other_dataset``; :func:`eval_dir_of` says where)."""
    cfg = cfg or EvalConfig()
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r} (valid: {', '.join(SPLITS)})")
    run_dir, data = RunDir(run_dir), Path(data_dir)
    run = run_dir.read_run()
    check_complete(run_dir, run)
    dataset = _describe(run_dir, data)
    other = other_dataset(run, dataset, data, allow_other_dataset)
    dataset = dataset.with_changes(matches_training=_matches_training(run, dataset))
    eval_dataset(dataset, cfg)  # a bad shot override fails before any prediction
    sha = sha256_file(resolve_weights(run_dir.path, cfg.checkpoint))  # the weights about to be evaluated
    preds = {s: with_subgroups(_predict(run_dir.path, data, s, cfg), data, s) for s in dict.fromkeys(("val", split))}
    layer, _ = run_layer(run_dir, preds["val"], dataset, cfg.checkpoint, sha, cfg.seed, own_dataset=other is None)
    preds = {s: with_columns(df, layer) for s, df in preds.items()}
    for s, df in preds.items():
        _write_parquet(df, run_dir.predictions_path(s, other))
    metrics = compute_metrics(preds[split], preds["val"], dataset, cfg, split, layer)
    metrics.update(_provenance(run, cfg, sha))
    atomic_write_json(run_dir.metrics_path(split, other), metrics)
    from ecgka.training.mlflow_mirror import mirror_evaluation  # the config's MLflow mirror, when it has one

    mirror_evaluation(run_dir, metrics, split if other is None else f"{other}/{split}")
    return metrics


def eval_dir_of(run_dir: str | Path, metrics: dict) -> Path:
    """Where ``evaluate_run`` wrote these metrics: ``eval/<split>`` or ``eval/<fingerprint>/<split>``."""
    dataset = DatasetInfo.from_dict(metrics["dataset"], what=f"{run_dir} metrics")
    other = dataset.fingerprint if dataset.matches_training is False else None
    return RunDir(run_dir).eval_dir(metrics["split"], other)
