"""Performance by subgroup (TRIPOD+AI 14, 23a): sex, age band, care setting, eGFR stage. Pure: arrays in, a
JSON-ready dict out (metrics.json ``subgroups``).

Per subgroup: n, subjects, events (hypo, hyper), MAE, few-shot MAE, AUROC of hypo- and hyperkalaemia and
sensitivity / specificity at the operating point fixed on the whole validation split, each with a
subject-bootstrap percentile CI (replicates from ``ecgka.metrics.bootstrap.cluster_bootstrap_indices``, one
set of replicates for every metric of a subgroup). A subgroup under ``min_n`` ECGs is ``too_few``: its counts
only, no metric and no CI. A metric is flagged when the subgroup's whole CI is worse than the value on the
rest of the split (every other ECG of that factor, unknown included).
"""

from __future__ import annotations

import numpy as np

from ecgka.metrics.bootstrap import cluster_bootstrap_indices
from ecgka.metrics.clinical import CONDITIONS, MIN_POSITIVES, auroc

MIN_SUBGROUP = 30  # fewer ECGs: "too few", no metric, no CI
# MIN_POSITIVES (ecgka.metrics.clinical): an AUROC / sensitivity on fewer positive (specificity: negative) cases
# is not given
FACTORS = ("sex", "age_band", "care_setting", "egfr_stage")
EVENTS = ("hypo", "hyper")
# metric -> True when lower is better
METRICS = {"mae": True, "few_mae": True, "auroc_hypo": False, "auroc_hyper": False, "sensitivity_hypo": False,
           "specificity_hypo": False, "sensitivity_hyper": False, "specificity_hyper": False}


def _values(preds: np.ndarray, labels: np.ndarray, few: np.ndarray, cuts: dict[str, float | None]) -> dict:
    """Every metric on one sample (None where undefined: no few-shot ECG, too few events, no cut-off)."""
    err = np.abs(preds - labels)
    out = {"mae": float(err.mean()) if err.size else None,
           "few_mae": float(err[few].mean()) if few.any() else None}
    for name in EVENTS:
        cond = CONDITIONS[name]
        truth = cond.positive(labels)
        n_pos, n_neg = int(truth.sum()), int((~truth).sum())
        out[f"auroc_{name}"] = auroc(cond.score(preds), truth) if min(n_pos, n_neg) >= MIN_POSITIVES else None
        cut = cuts.get(name)
        called = (preds <= cut if cond.low else preds >= cut) if cut is not None else None
        out[f"sensitivity_{name}"] = (float(called[truth].mean()) if called is not None and n_pos >= MIN_POSITIVES
                                      else None)
        out[f"specificity_{name}"] = (float((~called[~truth]).mean()) if called is not None and n_neg >= MIN_POSITIVES
                                      else None)
    return out


def _cis(preds, labels, few, subjects, cuts, estimate: dict, n_boot: int, seed: int, level: float) -> dict:
    reps: dict[str, list[float]] = {m: [] for m in METRICS}
    for idx in cluster_bootstrap_indices(subjects, n_boot, seed):
        vals = _values(preds[idx], labels[idx], few[idx], cuts)
        for m, v in vals.items():
            if v is not None and np.isfinite(v):
                reps[m].append(v)
    alpha = (1.0 - level) / 2.0
    out = {}
    for m, values in reps.items():
        est = estimate[m]
        if est is None or len(values) < max(1, n_boot // 2):
            out[m] = None
            continue
        lo, hi = (float(x) for x in np.quantile(values, [alpha, 1.0 - alpha]))
        out[m] = {"lower": min(lo, est), "upper": max(hi, est), "level": level, "n_boot": n_boot,
                  "n_valid": len(values)}
    return out


def _events(labels: np.ndarray) -> dict[str, int]:
    return {name: int(CONDITIONS[name].positive(labels).sum()) for name in EVENTS}


def _worse(metric: str, ci: dict | None, rest: float | None) -> bool:
    if ci is None or rest is None:
        return False
    return ci["lower"] > rest if METRICS[metric] else ci["upper"] < rest


def subgroup_metrics(preds, labels, subjects, few, factors: dict[str, np.ndarray], cuts: dict[str, float | None],
                     n_boot: int = 1000, seed: int = 0, level: float = 0.95, min_n: int = MIN_SUBGROUP,
                     orders: dict[str, tuple[str, ...]] | None = None) -> dict:
    """``{"min_n", "bootstrap", "factors": {factor: [{"level", "n", "n_subjects", "events", "too_few",
    "metrics", "ci", "rest", "worse"}]}}``. ``factors``: a label per ECG for each factor (``unknown`` included as
    a level); ``cuts``: the operating-point cut-off on predicted K of ``hypo`` / ``hyper`` (None: not fixed);
    ``orders``: the display order of each factor's known levels (others follow, sorted)."""
    preds = np.asarray(preds, np.float64)
    labels = np.asarray(labels, np.float64)
    subjects = np.asarray(subjects)
    few = np.asarray(few, bool)
    out = {"min_n": min_n, "bootstrap": {"n_boot": n_boot, "seed": seed, "unit": "subject", "level": level},
           "factors": {}}
    for factor, values in factors.items():
        values = np.asarray(values, dtype=object).astype(str)
        rows = []
        for lvl in sorted(set(values.tolist()), key=_order((orders or {}).get(factor, ()))):
            sel = values == lvl
            row = {"level": lvl, "n": int(sel.sum()), "n_subjects": int(len(np.unique(subjects[sel]))),
                   "events": _events(labels[sel]), "too_few": bool(sel.sum() < min_n)}
            if not row["too_few"]:
                est = _values(preds[sel], labels[sel], few[sel], cuts)
                rest = _values(preds[~sel], labels[~sel], few[~sel], cuts) if (~sel).any() else dict.fromkeys(METRICS)
                ci = _cis(preds[sel], labels[sel], few[sel], subjects[sel], cuts, est, n_boot, seed, level)
                row |= {"metrics": est, "ci": ci, "rest": rest,
                        "worse": [m for m in METRICS if _worse(m, ci[m], rest[m])]}
            rows.append(row)
        out["factors"][factor] = rows
    return out


def _order(known: tuple[str, ...]):
    return lambda lvl: (known.index(lvl) if lvl in known else len(known), lvl)
