"""The report's "Subgroups" section (TRIPOD+AI 14, 23a): per run and subgroup (sex, age band, care setting, eGFR
stage) n, events, MAE, few-shot MAE, AUROC and sensitivity / specificity at the operating point, each with its
subject-bootstrap CI, from metrics.json ``subgroups`` (``ecgka.metrics.subgroups``; the report never reads
predictions).

A subgroup under the minimum size is shown as "too few" (no metric, no CI). Small cells: a count of 1 to
``SMALL_CELL - 1`` ECGs, subjects or events is shown as "<10" (the PhysioNet credentialed-data rule: no
count under 10 individuals is published), in the page and in the CSVs. A metric whose whole CI is worse than the
rest of the split is marked ``worse`` and named in the "worse than the rest" column.
"""

from __future__ import annotations

import pandas as pd

from ecgka.metrics.subgroups import METRICS
from ecgka.report.render_utils import fmt
from ecgka.report.tables import Table

SMALL_CELL = 10
TOO_FEW = "too few"
SECTION = ("subgroups", "Subgroups (TRIPOD+AI 14, 23a)", ("subgroups",), ())
FACTOR_TITLES = {"sex": "sex", "age_band": "age band", "care_setting": "care setting", "egfr_stage": "eGFR stage"}
METRIC_TITLES = {"mae": "MAE", "few_mae": "few-shot MAE", "auroc_hypo": "AUROC hypo", "auroc_hyper": "AUROC hyper",
                 "sensitivity_hypo": "sensitivity hypo", "specificity_hypo": "specificity hypo",
                 "sensitivity_hyper": "sensitivity hyper", "specificity_hyper": "specificity hyper"}


def count_text(n: int) -> str:
    """A count as published: ``<10`` for 1..9 (small-cell suppression), else the number."""
    return f"<{SMALL_CELL}" if 0 < int(n) < SMALL_CELL else str(int(n))


def _cell(value, ci) -> str:
    if value is None:
        return fmt(None)
    if not ci:
        return fmt(value)
    return f"{fmt(value)} ({fmt(ci['lower'])}-{fmt(ci['upper'])})"


def subgroup_table(runs) -> Table | None:
    """One row per run, factor and level; None when no run has subgroup metrics."""
    rows, tidy, marks = [], [], {}
    for r in runs:
        block = r.metrics.get("subgroups")
        if not block:
            continue
        for factor, levels in block["factors"].items():
            for lv in levels:
                keys = {"method": r.display_name, "factor": FACTOR_TITLES.get(factor, factor), "subgroup": lv["level"]}
                row = {**keys, "n": count_text(lv["n"]), "subjects": count_text(lv["n_subjects"]),
                       "hypo events": count_text(lv["events"]["hypo"]),
                       "hyper events": count_text(lv["events"]["hyper"])}
                if lv["too_few"]:
                    row |= {t: TOO_FEW for t in METRIC_TITLES.values()} | {"worse than the rest": ""}
                else:
                    row |= {METRIC_TITLES[m]: _cell(lv["metrics"][m], lv["ci"][m]) for m in METRICS}
                    row["worse than the rest"] = ", ".join(METRIC_TITLES[m] for m in lv["worse"])
                    for m in lv["worse"]:
                        marks[(len(rows), METRIC_TITLES[m])] = "worse"
                rows.append(row)
                for m in METRICS:
                    ci = None if lv["too_few"] else lv["ci"][m]
                    tidy.append({**keys, "n": row["n"], "metric": m,
                                 "value": None if lv["too_few"] else lv["metrics"][m],
                                 "ci_lower": ci["lower"] if ci else None, "ci_upper": ci["upper"] if ci else None,
                                 "too_few": lv["too_few"],
                                 "worse_than_rest": (not lv["too_few"]) and m in lv["worse"]})
    if not rows:
        return None
    min_n = next(r.metrics["subgroups"]["min_n"] for r in runs if r.metrics.get("subgroups"))
    note = (f"Subject-bootstrap 95 % CIs in brackets. Subgroups under {min_n} ECGs: \"{TOO_FEW}\" (no metric, no "
            f"CI). Counts under {SMALL_CELL} are shown as <{SMALL_CELL} (PhysioNet small-cell rule). Sensitivity and "
            "specificity at the operating point fixed on the whole validation split. \"worse than the rest\": the "
            "subgroup's whole CI is worse than the value on every other ECG of the split.")
    return Table("subgroups", "Performance by subgroup", pd.DataFrame(rows), note=note, marks=marks,
                 keys=("method", "factor", "subgroup"), tidy_df=pd.DataFrame(tidy))


def report_tables(model) -> dict[str, Table]:
    """``{"subgroups": Table}`` for the report's main runs (empty without subgroup metrics)."""
    table = subgroup_table(model.main_runs or model.runs)
    return {table.name: table} if table is not None else {}
