"""Report section "Calibrated uncertainty" and the clinical section's probability calibration (issue 23).

Read from metrics.json ``uncertainty`` (written by ``ecgka evaluate`` from the run's conformal layer,
``ecgka.evaluation.uncertainty``): the coverage and mean width of the label-conditional conformal intervals
per range of the laboratory value (each shot group, and the clinical K ranges) and nominal level, and the
Brier score and reliability bins of the event probabilities. Runs evaluated before the layer existed are
left out (nothing is recomputed here: the report never sees predictions).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ecgka.report.collect import ReportModel, RunEntry
from ecgka.report.figures import MAX_PANELS, Figure, _grid, _legend, _plt, _png
from ecgka.report.tables import Table
from ecgka.report.wording import POTASSIUM, Wording, wording

# SECTIONS entry of report/build.py: (section id, title, tables, figures)
SECTION = ("uncertainty", "Calibrated uncertainty: conformal intervals by range", ("interval_coverage",),
           ("interval_coverage",))
CLINICAL_TABLES = ("probability_brier",)  # placed in the clinical section (build.SECTIONS "clinical")
CLINICAL_FIGURES = ("reliability",)
SET_SHIFT = 0.06  # the figure's hollow set marker sits this far right of its interval's marker
SHOWN_LEVEL = 0.9  # the display table's and figure's level; every level is in the tidy CSV
RELIABILITY_CONDITIONS = ("hypo", "hyper")  # the curves drawn (those of the decision curves); Brier: all four

INTERVAL_NOTE = (
    "Intervals per {sample} from a label-conditional (Mondrian) conformal predictive system fitted on the run's "
    "validation predictions, bins of the true value bounded by the shot-group (and clinical) edges, sparse bins "
    "merged with a neighbour: coverage is meant to hold within each range of the {reference} value, not only "
    "overall. Two rows per method. \"interval\" (k_lo, k_hi): coverage at {shown}, the share of {split} {samples} "
    "whose {reference} value lies in its interval; width: mean interval width in {unit}. \"accepted set\" "
    "(k_set): the {reference} values the conformal test accepts, of which the interval is the hull; where the "
    "model cannot tell a rare value from a common one the set has gaps, and the interval, which spans them, "
    "covers the common ranges above the nominal level; the set is what the per-range guarantee is about. "
    "Blue: the 95 % Clopper-Pearson CI of the coverage lies below the nominal level. The CIs and the 80 % and "
    "95 % levels are in the tidy CSV. Score: the conformity score of the run's "
    "layer, \"calibrated\" (prediction minus the line of predictions on true values fitted on validation) or "
    "\"residual\" (true minus predicted value; layers fitted before the calibrated score, or its fallback when "
    "that line is flat).")
IN_SAMPLE_NOTE = (" The evaluated split is the calibration split itself (val): its coverage is in-sample and "
                  "guaranteed by construction, not a test of the layer.")
BRIER_NOTE = (
    "Event probabilities from the same predictive distribution (posterior over the label grid, prediction "
    "densities per range fitted on validation): p_hypo = P(K < 3.5), p_hyper = P(K >= 5.5), p_severe_hypo = "
    "P(K < 2.5), p_severe_hyper = P(K > 6.5). \"Brier\": the shipped probabilities (the columns of ecgka predict), "
    "whose prior is the training split's label distribution; \"split prior\": the same distribution with the "
    "evaluated split's label distribution as prior, what the shipped ones become at that split's prevalences "
    "(the test split is balanced by design, so its prevalences are no clinic's). Brier score: mean squared "
    "difference between the probability and the event (lower is better); reference: always predicting the "
    "split's prevalence. Bold: lowest in the column.")


OF = (("interval (k_lo, k_hi)", ""), ("accepted set (k_set)", "set_"))  # display rows per method: (output,
# metrics key prefix)
TIDY_KEYS = ("coverage", "ci_lower", "ci_upper", "mean_width", "set_coverage", "set_ci_lower", "set_ci_upper",
             "set_mean_length")


def _round6(value):
    return None if value is None else round(float(value), 6)


def _with(runs: list[RunEntry]) -> list[RunEntry]:
    return [r for r in runs if (r.metrics.get("uncertainty") or {}).get("coverage")]


def _level_text(level: float) -> str:
    return f"{round(level * 100):d} %"


def interval_table(runs: list[RunEntry], split: str = "test", words: Wording = POTASSIUM) -> Table:
    """Coverage and mean width at ``SHOWN_LEVEL``: one row per method, two columns per range (its n in the
    title, the same test set for every run); the tidy CSV: one row per method, range and level with n,
    coverage, its CI and the mean width (every level)."""
    shown = _level_text(SHOWN_LEVEL)
    in_sample = any(r.metrics["uncertainty"].get("in_sample") for r in runs)
    sizes: dict[str, set] = {}
    for r in runs:
        for x in r.metrics["uncertainty"]["coverage"]:
            sizes.setdefault(x["range"], set()).add(x["n"])
    title = {name: f"{name} (n={next(iter(n))})" if len(n) == 1 else name for name, n in sizes.items()}
    rows, tidy, marks = [], [], {}
    for r in runs:
        layer = r.metrics["uncertainty"].get("layer") or {}
        score = layer.get("score", "residual" if layer else None)
        coverage = r.metrics["uncertainty"]["coverage"]
        for x in coverage:
            tidy.append({"method": r.display_name, "range": x["range"], "level": x["level"], "n": x["n"],
                         **{k: _round6(x.get(k)) for k in TIDY_KEYS}})
        for output, prefix in OF:
            shown_rows = [x for x in coverage if abs(x["level"] - SHOWN_LEVEL) < 1e-9 and f"{prefix}coverage" in x]
            if not shown_rows:
                continue
            row = {"method": r.display_name, "score": score, "output": output}
            for x in shown_rows:
                col = f"coverage {title[x['range']]}"
                width = f"{prefix}mean_length" if prefix else "mean_width"
                row[col], row[f"width {title[x['range']]}"] = x.get(f"{prefix}coverage"), x.get(width)
                upper = x.get(f"{prefix}ci_upper")
                if upper is not None and upper < x["level"]:
                    marks[(len(rows), col)] = "worse"
            rows.append(row)
    note = INTERVAL_NOTE.format(split=split, unit=words.unit, shown=shown, samples=words.samples,
                                sample=words.samples.rstrip("s"), reference=words.reference) + \
        (IN_SAMPLE_NOTE if in_sample else "")
    return Table("interval_coverage", f"Coverage and mean width of the {shown} conformal intervals by range",
                 pd.DataFrame(rows), note, marks, tidy_df=pd.DataFrame(tidy))


def _conditions(runs: list[RunEntry]) -> list[str]:
    names: dict[str, None] = {}
    for r in runs:
        names.update(dict.fromkeys(r.metrics["uncertainty"].get("probabilities") or {}))
    return list(names)


def brier_table(runs: list[RunEntry]) -> Table | None:
    """Brier score per method and condition: of the shipped probabilities (training prevalence), of the same
    distribution under the evaluated split's label distribution, and the prevalence reference; tidy: one row
    per value."""
    names = _conditions(runs)
    if not names:
        return None
    rows, tidy = [], []
    for r in runs:
        u = r.metrics["uncertainty"]
        shipped, at_split = u.get("probabilities") or {}, u.get("probabilities_split_prior") or {}
        row = {"method": r.display_name}
        for n in names:
            p, q = shipped.get(n) or {}, at_split.get(n) or {}
            row.update({f"Brier {n}": p.get("brier"), f"Brier {n} (split prior)": q.get("brier"),
                        f"reference {n}": p.get("brier_baseline")})
            for prior, block in (("training", p), ("split", q)):
                tidy.append({"method": r.display_name, "condition": n, "prior": prior,
                             **{k: block.get(k) for k in ("brier", "brier_baseline", "n", "n_positive")}})
        rows.append(row)
    df = pd.DataFrame(rows)
    marks: dict[tuple[int, str], str] = {}
    for c in [c for c in df.columns if c.startswith("Brier ")]:
        values = pd.to_numeric(df[c], errors="coerce")
        if values.notna().any():
            marks[(int(values.idxmin()), c)] = "best"
    return Table("probability_brier", "Event probabilities: Brier score", df, BRIER_NOTE, marks,
                 tidy_df=pd.DataFrame(tidy))


def _range_order(runs: list[RunEntry]) -> list[str]:
    order: dict[str, None] = {}
    for r in runs:
        order.update(dict.fromkeys(x["range"] for x in r.metrics["uncertainty"]["coverage"]))
    return list(order)


def coverage_figure(runs: list[RunEntry], words: Wording = POTASSIUM) -> Figure:
    """Coverage per range at ``SHOWN_LEVEL`` against the nominal line, one marker (with its CI) per method."""
    plt = _plt()
    ranges = _range_order(runs)
    fig, ax = plt.subplots(figsize=(5.6, 3.0))
    offsets = np.linspace(-0.3, 0.3, len(runs)) if len(runs) > 1 else np.zeros(1)
    for off, r in zip(offsets, runs, strict=False):
        at = {x["range"]: x for x in r.metrics["uncertainty"]["coverage"]
              if abs(x["level"] - SHOWN_LEVEL) < 1e-9 and x.get("coverage") is not None}
        pts = [(i + off, at[name]) for i, name in enumerate(ranges) if name in at]
        if not pts:
            continue
        y = np.array([p["coverage"] for _, p in pts])
        lo = np.array([p["coverage"] if p.get("ci_lower") is None else p["ci_lower"] for _, p in pts])
        hi = np.array([p["coverage"] if p.get("ci_upper") is None else p["ci_upper"] for _, p in pts])
        bars = ax.errorbar([x for x, _ in pts], y, yerr=[y - lo, hi - y], fmt="o", ms=3, lw=0.7, capsize=1.5,
                           label=r.display_name)
        sets = [(x + SET_SHIFT, p["set_coverage"]) for x, p in pts if p.get("set_coverage") is not None]
        if sets:  # the accepted set's coverage: a hollow marker just right of the interval's
            ax.plot(*zip(*sets, strict=True), "o", ms=3, mfc="none", mew=0.7, color=bars[0].get_color())
    ax.axhline(SHOWN_LEVEL, color="k", ls="--", lw=0.8, label="nominal")
    ax.set_xticks(range(len(ranges)))
    ax.set_xticklabels(ranges, rotation=30, ha="right", fontsize=7)
    ax.set_ylim(max(0.0, min(ax.get_ylim()[0], SHOWN_LEVEL - 0.2)), 1.01)
    ax.set_ylabel(f"coverage of the {_level_text(SHOWN_LEVEL)} intervals", fontsize=8)
    ax.legend(fontsize=5, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the axes: no marker hidden
    return Figure("interval_coverage", "Coverage of the conformal intervals by range", _png(fig),
                  f"Share of {words.samples} whose {words.reference} value lies in its {_level_text(SHOWN_LEVEL)} "
                  f"interval, per range of the {words.reference} value (all, shot groups, clinical ranges where "
                  "they apply), with 95 % Clopper-Pearson "
                  "CIs; hollow: the accepted set (the values the conformal test accepts; the interval is its hull); "
                  "dashed: the nominal level (other levels: the tidy table).")


def _reliability(r: RunEntry, name: str) -> list[dict]:
    """A run's reliability bins of one condition under the split's prior (the shipped ones when absent;
    metrics.json ``figures.reliability``), non-empty bins."""
    data = (r.metrics.get("figures") or {}).get("reliability") or {}
    bins = (data.get("split_prior") or data.get("shipped") or {}).get(name) or []
    return [b for b in bins if b.get("n")]


def reliability_figure(runs: list[RunEntry]) -> Figure | None:
    """Reliability curves of the event probabilities: observed event fraction against mean probability."""
    names = [n for n in RELIABILITY_CONDITIONS if any(_reliability(r, n) for r in runs)]
    if not names:
        return None
    fig, axes = _grid(len(names), size=(2.8, 2.4))
    for ax, n in zip(axes, names, strict=False):
        for r in runs:
            bins = _reliability(r, n)
            if bins:
                ax.plot([b["mean_predicted"] for b in bins], [b["observed"] for b in bins], lw=0.8,
                        label=r.display_name)
        ax.plot([0, 1], [0, 1], color="#bbbbbb", lw=0.6)
        head = next(((r.metrics["uncertainty"]["probabilities"] or {}).get(n) for r in runs
                     if (r.metrics["uncertainty"].get("probabilities") or {}).get(n)), {})
        ax.set_title(f"{head.get('title', n)}: {head.get('column', n)}", fontsize=8)
        ax.set(xlabel="mean predicted probability", ylabel="observed fraction", xlim=(0, 1), ylim=(0, 1))
    _legend(axes[0], 5)  # one legend (the same methods in each panel)
    return Figure("reliability", "Reliability of the event probabilities", _png(fig),
                  "Observed fraction of hypo- and hyperkalaemia against the mean predicted probability, per "
                  "probability bin (empty bins omitted), the predictive distribution taken under the evaluated split's label "
                  "distribution (the split prior; the shipped probabilities assume the training prevalence, see "
                  "the Brier table, which gives each curve's Brier score); grey: perfect calibration.")


def report_tables(model: ReportModel) -> dict[str, Table]:
    """The interval table (uncertainty section) and the Brier table (clinical section), for runs that have
    metrics.json ``uncertainty``."""
    runs = _with(model.main_runs or model.runs)
    if not runs:
        return {}
    words = wording(model.main_dataset) if model.main_dataset is not None else POTASSIUM
    out = [interval_table(runs, model.split, words), brier_table(runs)]
    return {t.name: t for t in out if t is not None}


def report_figures(model: ReportModel) -> dict[str, Figure]:
    runs = _with(model.main_runs or model.runs)[:MAX_PANELS]
    if not runs:
        return {}
    words = wording(model.main_dataset) if model.main_dataset is not None else POTASSIUM
    out = [coverage_figure(runs, words), reliability_figure(runs)]
    return {f.name: f for f in out if f is not None}
