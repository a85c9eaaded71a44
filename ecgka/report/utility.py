"""Report sections "Deployment prevalence and clinical utility" and "Calibration and agreement".

Read from metrics.json ``utility`` and ``calibration_fit`` (written by ``ecgka evaluate``, see
``ecgka.metrics.utility`` and ``ecgka.metrics.calibration``); runs evaluated before these existed are left
out of the tables (nothing is recomputed here: the report never sees predictions).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ecgka.report.collect import ReportModel, RunEntry
from ecgka.report.figures import Figure, _grid, _legend, _png
from ecgka.report.tables import Table

# SECTIONS entries of report/build.py: (section id, title, tables, figures)
UTILITY_SECTION = ("utility", "Deployment prevalence and clinical utility (TRIPOD+AI 12e, 15)",
                   ("deployment_ppv_npv", "event_model"), ("decision_curves",))
CALIBRATION_SECTION = ("calibration-fit", "Calibration and agreement",
                       ("calibration_fit", "mae_by_clinical_range"), ())

UTILITY_NOTE = (
    "The test split is balanced by design, so its own PPV and NPV describe no clinic. PPV and NPV here are "
    "recomputed by Bayes' rule from the test sensitivity and specificity at a declared deployment prevalence "
    "(declared: the training split's prevalence, or the user's deployment_prevalence option of ecgka evaluate, "
    "\"declared by\" in the event-model table; also 1 %, 5 % and 20 %); the 95 % CIs carry the subject-"
    "bootstrap replicates of sensitivity and specificity through the same formula.")
EVENT_NOTE = (
    "Event model: logit P(event) = a + b x predicted K, a logistic regression of the event on the predicted K "
    "fitted on the run's validation predictions, its intercept then shifted by logit(declared prevalence) - "
    "logit(validation prevalence). The decision curves use it only for runs evaluated without a conformal layer; "
    "runs with one use its probabilities p_hypo / p_hyper (section \"Calibrated uncertainty\"). Net benefit is "
    "computed with dcurves at the declared prevalence.")
CALIBRATION_NOTE = (
    "Calibration line: ordinary least squares of the laboratory K on the predicted K (intercept a, slope b; "
    "ideal a = 0, b = 1), overall and per shot region, with subject-bootstrap 95 % CIs. A slope above 1 "
    "means the predictions are squeezed toward the mean (extremes under-predicted), the imbalance Dist Loss "
    "targets; a slope below 1 means they are spread too wide.")


def _with(runs: list[RunEntry], key: str) -> list[RunEntry]:
    return [r for r in runs if r.metrics.get(key)]


def _ci(ci: dict | None, side: str):
    return _r6((ci or {}).get(side))


def _r6(value):
    """6 decimals in the tables (metrics.json keeps every digit): the paper grid's tidy CSV stays small."""
    return None if value is None else round(float(value), 6)


def deployment_table(runs: list[RunEntry]) -> Table:
    rows = []
    for r in runs:
        for c in r.metrics["utility"]["conditions"].values():
            for x in c["ppv_npv"]:
                rows.append({"method": r.display_name, "condition": c["title"], "point": x["point"],
                             "prevalence": _r6(x["prevalence"]), "declared": "yes" if x["declared"] else "",
                             "sensitivity": _r6(x["sensitivity"]), "specificity": _r6(x["specificity"]),
                             "PPV": _r6(x["ppv"]), "PPV CI lower": _ci(x["ppv_ci"], "lower"),
                             "PPV CI upper": _ci(x["ppv_ci"], "upper"),
                             "NPV": _r6(x["npv"]), "NPV CI lower": _ci(x["npv_ci"], "lower"),
                             "NPV CI upper": _ci(x["npv_ci"], "upper")})
    return Table("deployment_ppv_npv", "PPV and NPV at deployment prevalences", pd.DataFrame(rows), UTILITY_NOTE,
                 keys=("method", "condition", "point", "prevalence", "declared"))


def event_model_table(runs: list[RunEntry]) -> Table:
    rows = []
    for r in runs:
        for c in r.metrics["utility"]["conditions"].values():
            m = c.get("event_model") or {}
            rows.append({"method": r.display_name, "condition": c["title"], "intercept a": m.get("intercept"),
                         "slope b": m.get("slope"), "val prevalence": m.get("fit_prevalence"),
                         "declared prevalence": c.get("declared_prevalence"),
                         "declared by": c.get("prevalence_source") or "training"})
    return Table("event_model", "Event probability from predicted K (fitted on validation)", pd.DataFrame(rows),
                 EVENT_NOTE, keys=("method", "condition"))


def calibration_table(runs: list[RunEntry]) -> Table:
    rows = []
    for r in runs:
        for g, f in r.metrics["calibration_fit"].items():
            if g == "mae_by_range":
                continue
            rows.append({"method": r.display_name, "shot region": g, "n": f["n"], "intercept": f["intercept"],
                         "intercept CI lower": _ci(f["intercept_ci"], "lower"),
                         "intercept CI upper": _ci(f["intercept_ci"], "upper"), "slope": f["slope"],
                         "slope CI lower": _ci(f["slope_ci"], "lower"), "slope CI upper": _ci(f["slope_ci"], "upper")})
    return Table("calibration_fit", "Calibration line: observed K on predicted K", pd.DataFrame(rows),
                 CALIBRATION_NOTE, keys=("method", "shot region"))


def clinical_range_table(runs: list[RunEntry]) -> Table:
    rows = [{"method": r.display_name, "K range": x["range"], "n": x["n"], "MAE": x["mae"],
             "MAE CI lower": _ci(x["mae_ci"], "lower"), "MAE CI upper": _ci(x["mae_ci"], "upper"), "bias": x["bias"]}
            for r in runs for x in r.metrics["calibration_fit"]["mae_by_range"]]
    return Table("mae_by_clinical_range", "MAE by clinical K range (mmol/L, laboratory K) with 95 % CI",
                 pd.DataFrame(rows), "Ranges: < 3.0, 3.0-3.5, 3.5-5.5, 5.5-6.0, >= 6.0 mmol/L (lower bound "
                 "included); CIs from the subject bootstrap.", keys=("method", "K range"))


def _curve(r: RunEntry, name: str) -> dict | None:
    """A run's decision curve: under metrics.json ``figures.decision_curves`` (kept out of the report's
    metrics.json), or ``utility.conditions.<name>.decision_curve`` in runs evaluated before."""
    curve = ((r.metrics.get("figures") or {}).get("decision_curves") or {}).get(name)
    return curve or (r.metrics["utility"]["conditions"].get(name) or {}).get("decision_curve")


def _probability_source(runs: list[RunEntry], names) -> str:
    """Where the curves' probabilities come from, in words: the conformal layer's (issue 23), the event model
    (runs evaluated before it), or each where it applies."""
    found = {(_curve(r, n) or {}).get("probability", "event_model") for r in runs for n in names if _curve(r, n)}
    layer = ("the conformal layer's event probabilities (p_hypo, p_hyper: the label-conditional predictive "
             "distribution fitted on validation under the training prevalence, moved to the declared one by the "
             "prior-shift correction)")
    if found == {"event_model"}:
        return "probabilities from the validation-fitted event model"
    if "event_model" not in found:
        return f"probabilities: {layer}"
    return f"probabilities: {layer}, or the validation-fitted event model for runs evaluated before it"


def _source(runs: list[RunEntry]) -> str:
    """How the prevalence was declared, in words: the training split's, or the user's (deployment_prevalence)."""
    found = {(r.metrics["utility"].get("prevalence") or {}).get("source", "training") for r in runs}
    if found == {"training"}:
        return "the training split's prevalence"
    return "a user-declared deployment prevalence (deployment_prevalence) where set, else the training split's"


def decision_curves(runs: list[RunEntry]) -> Figure | None:
    names = [n for n in ("hypo", "hyper") if any(_curve(r, n) for r in runs)]
    if not names:
        return None
    fig, axes = _grid(len(names), size=(4.2, 3.4))
    for ax, n in zip(axes, names, strict=False):
        ref = None
        for r in runs:
            c = r.metrics["utility"]["conditions"].get(n) or {}
            d = _curve(r, n)
            if d:
                ax.plot(d["thresholds"], d["model"], lw=1, label=r.display_name)
                ref, title = d, c["title"]
        t = np.asarray(ref["thresholds"])
        ax.plot(t, ref["treat_all"], color="#888888", ls="--", lw=0.8, label="treat all")
        ax.plot(t, ref["treat_none"], color="k", lw=0.8, label="treat none")
        ax.set_ylim(-0.02, max(0.02, ref["prevalence"] * 1.1))
        ax.set_title(f"{title} (prevalence {ref['prevalence']:.3f})", fontsize=8)
        ax.set(xlabel="threshold probability", ylabel="net benefit")
        _legend(ax, 6)
    return Figure("decision_curves", "Decision curves", _png(fig),
                  f"Net benefit against threshold probability at the declared prevalence ({_source(runs)}), "
                  f"with treat-all and treat-none; {_probability_source(runs, names)}.")


def report_tables(model: ReportModel) -> dict[str, Table]:
    """The two sections' tables, for runs whose metrics.json has them."""
    main = model.main_runs or model.runs
    out = []
    if u := _with(main, "utility"):
        out += [deployment_table(u), event_model_table(u)]
    if c := _with(main, "calibration_fit"):
        out += [calibration_table(c), clinical_range_table(c)]
    return {t.name: t for t in out}


def report_figures(model: ReportModel) -> dict[str, Figure]:
    main = (model.main_runs or model.runs)[:12]
    u = _with(main, "utility")
    fig = decision_curves(u) if u else None
    return {fig.name: fig} if fig else {}
