"""Deployment prevalence and clinical utility (TRIPOD+AI 12e, 15): pure functions on arrays.

The test split is balanced by design, so its PPV and NPV describe no clinic. Here they are recomputed at a
declared deployment prevalence ``p`` from sensitivity and specificity (Bayes):
``PPV = sens p / (sens p + (1 - spec)(1 - p))``, ``NPV = spec (1 - p) / (spec (1 - p) + (1 - sens) p)``,
with CIs from the subject-bootstrap replicates of (sens, spec) carried through the same formulas.

Decision curves need probabilities: the predicted K is turned into a probability of the event by a logistic
regression of the event on the predicted K fitted on the validation predictions (``fit_event_model``), and
its intercept is shifted by ``logit(p) - logit(val prevalence)`` (``shift_to_prevalence``), the prior-shift
correction. Net benefit at threshold probability ``t`` and prevalence ``p`` is
``sens(t) p - (1 - spec(t))(1 - p) t / (1 - t)`` (the case-control form of Vickers & Elkin, which is what
``dcurves.dca(..., prevalence=p)`` computes); treat-all is ``p - (1 - p) t / (1 - t)``, treat-none 0.

When the run has a conformal layer (issue 23, ``ecgka.metrics.conformal``), its event probabilities
(``p_hypo``, ``p_hyper``: a posterior under the training split's prevalence, calibrated on validation) replace
the event model for the decision curves, moved to the declared prevalence by the same prior-shift correction
(``shift_probability``); the curve records which probabilities it used (``probability``).
"""

from __future__ import annotations

import numpy as np

from ecgka.metrics.bootstrap import cluster_bootstrap_indices

DEPLOYMENT_PREVALENCES = (0.01, 0.05, 0.20)  # declared besides the training split's prevalence
THRESHOLDS = tuple(np.round(np.arange(0.01, 0.51, 0.01), 2))  # threshold probabilities of the decision curves


def bayes_ppv_npv(sens, spec, prevalence):
    """PPV and NPV at ``prevalence`` from sensitivity and specificity (arrays broadcast); NaN where undefined."""
    sens, spec, p = (np.asarray(x, dtype=np.float64) for x in (sens, spec, prevalence))
    with np.errstate(invalid="ignore", divide="ignore"):
        ppv = sens * p / (sens * p + (1 - spec) * (1 - p))
        npv = spec * (1 - p) / (spec * (1 - p) + (1 - sens) * p)
    return ppv, npv


def _sens_spec(predicted, truth, weights=None) -> tuple[float, float]:
    w = np.ones(truth.size) if weights is None else weights
    pos, neg = np.sum(w * truth), np.sum(w * ~truth)
    sens = np.sum(w * (truth & predicted)) / pos if pos else np.nan
    spec = np.sum(w * (~truth & ~predicted)) / neg if neg else np.nan
    return float(sens), float(spec)


def _ci(values, estimate, level: float = 0.95) -> dict:
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0 or estimate is None or not np.isfinite(estimate):
        return {"lower": None, "upper": None, "level": level, "n_valid": int(values.size)}
    a = (1 - level) / 2
    lo, hi = np.quantile(values, [a, 1 - a])
    return {"lower": float(min(lo, estimate)), "upper": float(max(hi, estimate)), "level": level,
            "n_valid": int(values.size)}


def _num(x) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None


def ppv_npv_at_prevalences(predicted, truth, subjects, prevalences, n_boot: int = 1000, seed: int = 0) -> list[dict]:
    """PPV / NPV at each prevalence with subject-bootstrap CIs (replicates of sens and spec propagated)."""
    predicted, truth = np.asarray(predicted, dtype=bool), np.asarray(truth, dtype=bool)
    sens, spec = _sens_spec(predicted, truth)
    reps = []
    for idx in cluster_bootstrap_indices(subjects, n_boot, seed):
        w = np.bincount(idx, minlength=truth.size).astype(np.float64)
        reps.append(_sens_spec(predicted, truth, w))
    reps = np.asarray(reps, dtype=np.float64).reshape(-1, 2)
    rows = []
    for p in prevalences:
        ppv, npv = bayes_ppv_npv(sens, spec, p)
        ppv_b, npv_b = bayes_ppv_npv(reps[:, 0], reps[:, 1], p)
        rows.append({"prevalence": float(p), "sensitivity": _num(sens), "specificity": _num(spec),
                     "ppv": _num(ppv), "ppv_ci": _ci(ppv_b, _num(ppv)),
                     "npv": _num(npv), "npv_ci": _ci(npv_b, _num(npv))})
    return rows


def fit_event_model(preds, truth, n_iter: int = 50) -> dict | None:
    """Logistic regression ``logit P(event) = a + b * predicted K`` by Newton's method (no penalty);
    ``None`` when one class is absent. Returns intercept, slope and the fitting prevalence."""
    x = np.asarray(preds, dtype=np.float64).reshape(-1)
    y = np.asarray(truth, dtype=bool).reshape(-1).astype(np.float64)
    if y.size == 0 or y.min() == y.max():
        return None
    X = np.column_stack([np.ones_like(x), x])
    beta = np.zeros(2)
    for _ in range(n_iter):
        p = 1 / (1 + np.exp(-np.clip(X @ beta, -35, 35)))
        w = p * (1 - p)
        step = np.linalg.solve(X.T @ (X * w[:, None]) + 1e-9 * np.eye(2), X.T @ (y - p))
        beta += step
        if np.max(np.abs(step)) < 1e-10:
            break
    return {"intercept": float(beta[0]), "slope": float(beta[1]), "fit_prevalence": float(y.mean()),
            "n": int(y.size), "fitted_on": "val"}


def _logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


def shift_to_prevalence(model: dict, prevalence: float) -> dict:
    """The event model with its intercept shifted by ``logit(prevalence) - logit(fit prevalence)``."""
    return {**model, "intercept": model["intercept"] + _logit(prevalence) - _logit(model["fit_prevalence"]),
            "prevalence": float(prevalence)}


def event_probability(model: dict, preds) -> np.ndarray:
    z = model["intercept"] + model["slope"] * np.asarray(preds, dtype=np.float64)
    return 1 / (1 + np.exp(-np.clip(z, -35, 35)))


def shift_probability(prob, from_prevalence: float, to_prevalence: float) -> np.ndarray:
    """Probabilities calibrated at ``from_prevalence`` moved to ``to_prevalence`` (prior shift: the log-odds
    gain ``logit(to) - logit(from)``); 0 and 1 stay."""
    prob = np.clip(np.asarray(prob, dtype=np.float64), 0.0, 1.0)
    odds_ratio = np.exp(_logit(to_prevalence) - _logit(from_prevalence))
    with np.errstate(divide="ignore", invalid="ignore"):
        out = prob * odds_ratio / (prob * odds_ratio + (1 - prob))
    return np.where(prob >= 1.0, 1.0, np.where(prob <= 0.0, 0.0, out))


def net_benefit(prob, truth, thresholds=THRESHOLDS, prevalence: float | None = None) -> np.ndarray:
    """Net benefit of treating when ``prob >= t`` for each threshold ``t`` (at the sample's prevalence, or at
    ``prevalence`` through sensitivity and specificity)."""
    prob, truth = np.asarray(prob, dtype=np.float64), np.asarray(truth, dtype=bool)
    t = np.asarray(thresholds, dtype=np.float64)
    p = truth.mean() if prevalence is None else prevalence
    pos = prob[None, :] >= t[:, None]
    tpr = (pos & truth).sum(1) / max(truth.sum(), 1) * p
    fpr = (pos & ~truth).sum(1) / max((~truth).sum(), 1) * (1 - p)
    return tpr - fpr * t / (1 - t)


def treat_all(prevalence: float, thresholds=THRESHOLDS) -> np.ndarray:
    t = np.asarray(thresholds, dtype=np.float64)
    return prevalence - (1 - prevalence) * t / (1 - t)


def decision_curve(prob, truth, prevalence: float, thresholds=THRESHOLDS) -> dict:
    """Net benefit of the model, treat-all and treat-none through ``dcurves.dca`` at ``prevalence``."""
    import pandas as pd
    from dcurves import dca

    df = pd.DataFrame({"event": np.asarray(truth, dtype=bool).astype(int), "model": np.asarray(prob, float)})
    out = dca(data=df, outcome="event", modelnames=["model"], thresholds=list(thresholds), prevalence=prevalence)
    nb = {m: out[out["model"] == m].sort_values("threshold")["net_benefit"].to_numpy(float)
          for m in ("model", "all", "none")}
    return {"prevalence": float(prevalence), "thresholds": [float(x) for x in thresholds],
            "model": nb["model"].tolist(), "treat_all": nb["all"].tolist(), "treat_none": nb["none"].tolist(),
            "source": "dcurves.dca"}


def train_prevalence(centres, counts, condition) -> float | None:
    """A condition's prevalence in the training split, from its label histogram."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    return float(counts[condition.positive(centres)].sum() / total) if total else None


def utility_metrics(preds, labels, subjects, val_preds, val_labels, conditions: dict, declared: float | dict | None,
                    op_rules: dict | None = None, n_boot: int = 1000, seed: int = 0,
                    extra_prevalences=DEPLOYMENT_PREVALENCES, declared_source: str | dict = "training",
                    train_prevalence: dict | None = None, probabilities: dict | None = None) -> dict:
    """Per condition: PPV/NPV at the declared and fixed prevalences (clinical threshold and the val operating
    point), the val-fitted event model and the decision curve at the declared prevalence.

    ``declared`` is one prevalence, or one per condition name (the training split's, by default);
    ``op_rules`` maps a condition to its operating-point cut-off on predicted K (or None); ``declared_source``
    says where each declared prevalence comes from ("training": the training split's; "declared": the user's,
    ``EvalConfig.deployment_prevalence``), one for all or one per condition; ``train_prevalence`` (per
    condition) is recorded beside it. ``probabilities`` maps a condition to ``(column name, P(event) of each
    row of preds, the prevalence they are calibrated at)`` (the conformal layer's): given, the decision curve
    uses them (shifted to the declared prevalence) instead of the event model."""
    def per(value, name):
        return value.get(name) if isinstance(value, dict) else value

    sources = {n: per(declared_source, n) for n in conditions}
    out = {"prevalence": {"source": "declared" if "declared" in sources.values() else "training",
                          "by_condition": sources,
                          "declared": {n: per(declared, n) for n in conditions},
                          "training": {n: (train_prevalence or {}).get(n) for n in conditions}},
           "prevalences": [float(p) for p in extra_prevalences], "conditions": {}}
    for name, cond in conditions.items():
        p_decl = per(declared, name)
        truth = cond.positive(labels)
        points = {"clinical threshold": cond.positive(preds)}
        cut = (op_rules or {}).get(name)
        if cut is not None:
            points["operating point"] = (np.asarray(preds) <= cut) if cond.low else (np.asarray(preds) >= cut)
        prevs = ([p_decl] if p_decl else []) + list(extra_prevalences)
        rows = []
        for point, predicted in points.items():
            for i, r in enumerate(ppv_npv_at_prevalences(predicted, truth, subjects, prevs, n_boot, seed)):
                rows.append({"point": point, "declared": bool(p_decl) and i == 0, **r})
        model = fit_event_model(val_preds, cond.positive(val_labels))
        curve, given = None, (probabilities or {}).get(name)
        if p_decl and truth.any() and (~truth).any():
            if given is not None and given[2]:
                column, prob, at = given
                curve = {**decision_curve(shift_probability(prob, at, p_decl), truth, p_decl),
                         "probability": column, "probability_prevalence": float(at)}
            elif model is not None:
                shifted = shift_to_prevalence(model, p_decl)
                curve = {**decision_curve(event_probability(shifted, preds), truth, p_decl),
                         "probability": "event_model"}
        out["conditions"][name] = {"title": cond.title, "definition": cond.definition,
                                   "declared_prevalence": p_decl, "prevalence_source": per(declared_source, name),
                                   "ppv_npv": rows, "event_model": model,
                                   "decision_curve": curve}
    return out
