"""The report's tables as numeric DataFrames, all read from metrics.json values (one source).

Each table is written unrounded as a display CSV and as a tidy CSV (long format, snake_case:
``ecgka.report.tidy``), and shown rounded (3 decimals) in HTML and Markdown. ``marks`` flags cells for highlighting: "best" (lowest error of a column in the main table),
"better"/"worse" (a "+ Dist Loss" run against the same method without it, the paper's Table 2).
A display table has one row per run (method) and its metrics as columns; ``texts`` replaces a shown cell
(e.g. "too few" for an AUROC on fewer than ``MIN_POSITIVES`` positives) while the CSVs keep the number.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ecgka.catalog.info import DatasetInfo
from ecgka.labels import LabelGrid
from ecgka.metrics.clinical import MIN_POSITIVES
from ecgka.report.collect import ReportModel, RunEntry, has_clinical
from ecgka.report.tidy import describe_k_range, describe_metric, describe_shot_column, tidy_frame
from ecgka.report.wording import wording

GROUP_COLUMNS = [(metric, group) for metric in ("mae", "gm") for group in ("all", "many", "median", "few")]


@dataclass
class Table:
    name: str
    title: str
    df: pd.DataFrame
    note: str = ""
    marks: dict[tuple[int, str], str] = field(default_factory=dict)  # (row position, column) -> mark
    keys: tuple[str, ...] = ("method",)  # the columns that identify an observation in the tidy table
    describe: Callable[[str], dict] = describe_metric  # a value column's title -> tidy variables
    tidy_df: pd.DataFrame | None = None  # a tidy frame of its own (else the long format of ``df``)
    texts: dict[tuple[int, str], str] = field(default_factory=dict)  # (row, column) -> shown instead (HTML, MD)

    @property
    def tidy(self) -> pd.DataFrame:
        """The tidy (long, snake_case) version of this table."""
        return self.tidy_df if self.tidy_df is not None else tidy_frame(self.df, self.keys, self.describe)


def _col(metric: str, group: str) -> str:
    return f"{metric.upper()} {group}"


def _shot_row(r: RunEntry) -> dict:
    reg = r.metrics["regression"]
    return {_col(m, g): reg[g][m] for m, g in GROUP_COLUMNS}


def _baseline_of(r: RunEntry, runs: list[RunEntry]) -> RunEntry | None:
    """The same method without Dist Loss (same variant), preferring the same ablation label (e.g. B=256)."""
    if not r.dist_loss:
        return None
    candidates = [b for b in runs if b.method == r.method and not b.dist_loss and b.variant == r.variant]
    same = [b for b in candidates if b.ablation is not None and b.ablation == r.ablation]
    return (same or candidates or [None])[0]


def _lower_is_better(value, ref) -> str | None:
    if value is None or ref is None or value == ref:
        return None
    return "better" if value < ref else "worse"


def results_table(runs: list[RunEntry], name: str, title: str, label=lambda r: r.display_name) -> Table:
    """All/many/median/few MAE and GM per run (Tables 1, 8, 12), with best and Dist Loss marks."""
    df = pd.DataFrame([{"method": label(r), "n": r.metrics["regression"]["all"]["n"], **_shot_row(r)}
                       for r in runs])
    marks: dict[tuple[int, str], str] = {}
    for i, r in enumerate(runs):
        base = _baseline_of(r, runs)
        for m, g in GROUP_COLUMNS if base else ():
            mark = _lower_is_better(r.metrics["regression"][g][m], base.metrics["regression"][g][m])
            if mark:
                marks[(i, _col(m, g))] = mark
    for m, g in GROUP_COLUMNS:
        values = pd.to_numeric(df[_col(m, g)], errors="coerce")
        if values.notna().any():
            marks.setdefault((int(values.idxmin()), _col(m, g)), "best")
    note = ("Lower is better. Bold: lowest in the column. Green/blue: a \"+ Dist Loss\" run better/worse "
            "than the same method without Dist Loss.")
    return Table(name, title, df, note, marks, describe=describe_shot_column)


def results_title(ds: DatasetInfo) -> str:
    """The main table's title; the unit is named for labels other than potassium (e.g. "in years")."""
    w = wording(ds)
    return "Results by shot region (Tables 1, 8)" + ("" if w.label == "potassium" else f", errors in {w.unit}")


def improvement_table(model: ReportModel) -> Table:
    """Change of each metric when Dist Loss is added to a method (negative = lower error = better)."""
    rows = []
    for r in model.main_runs:
        base = _baseline_of(r, model.main_runs)
        if base is None:
            continue
        ra, rb = _shot_row(r), _shot_row(base)
        rows.append({"baseline": base.display_name, "with Dist Loss": r.display_name,
                     **{k: (ra[k] - rb[k]) if ra[k] is not None and rb[k] is not None else None for k in ra}})
    df = pd.DataFrame(rows, columns=["baseline", "with Dist Loss"] + [_col(m, g) for m, g in GROUP_COLUMNS])
    marks = {(i, c): ("better" if v < 0 else "worse") for i, row in df.iterrows()
             for c, v in row.items() if c.startswith(("MAE", "GM")) and v is not None and v == v and v != 0}
    return Table("dist_loss_improvement", "Effect of adding Dist Loss (with - without)", df,
                 "Negative values: Dist Loss lowered the error (green).", marks,
                 keys=("baseline", "with Dist Loss"), describe=describe_shot_column)


def dataset_tables(ds: DatasetInfo) -> list[Table]:
    counts = ds.counts
    t_counts = Table("dataset_counts", f"Dataset: {wording(ds).samples} per split",
                     pd.DataFrame([{"set": k, "n": v} for k, v in counts.items()], columns=["set", "n"]),
                     keys=("set",))
    excl = [{"stage": "ECG excluded", "reason": k, "n": v} for k, v in ds.details.get("exclusions", {}).items()]
    excl += [{"stage": "lab dropped", "reason": k, "n": v} for k, v in ds.details.get("labs_dropped", {}).items()]
    t_excl = Table("exclusions", "Exclusions by reason", pd.DataFrame(excl, columns=["stage", "reason", "n"]),
                   keys=("stage", "reason"))
    return [t_counts, t_excl, shot_region_table(ds)]


def shot_region_table(ds: DatasetInfo) -> Table:
    """Bins of each shot region as K ranges (display) and one row per bin (tidy)."""
    grid, counts = ds.grid, ds.train_bins.array
    regions = {g: sorted(int(b) for b in bins) for g, bins in ds.shot_groups.items()}
    train_col = f"train {wording(ds).samples}"
    rows = [{"region": g, "bins": len(bins), f"ranges ({grid.unit})": _ranges(bins, grid),
             train_col: int(counts[bins].sum()) if bins else 0} for g, bins in regions.items()]
    tidy = pd.DataFrame([{"shot_group": g, "bin": b, "bin_centre": float(grid.centre(b)),
                          "train_count": int(counts[b])} for g, bins in regions.items() for b in bins],
                        columns=["shot_group", "bin", "bin_centre", "train_count"])
    df = pd.DataFrame(rows, columns=["region", "bins", f"ranges ({grid.unit})", train_col])
    return Table("shot_regions", "Shot regions of the training set", df, _region_note(grid, wording(ds).samples),
                 tidy_df=tidy)


def _region_note(grid: LabelGrid, samples: str = "ECGs") -> str:
    return (f"Bins of {grid.step:g} {grid.unit} with training {samples}; a range lists the centres of its first and "
            "last bin.")


def _ranges(bins: list[int], grid: LabelGrid) -> str:
    """Contiguous runs of bin indices as label ranges, e.g. "1.8-3.1, 4.4, 5.0-8.5" (bin centres)."""
    runs: list[list[int]] = []
    for b in bins:
        if runs and b == runs[-1][-1] + 1:
            runs[-1].append(b)
        else:
            runs.append([b])
    decimals = max(0, -int(np.floor(np.log10(grid.step) + 1e-9)))
    text = [f"{grid.centre(r[0]):.{decimals}f}" + (f"-{grid.centre(r[-1]):.{decimals}f}" if len(r) > 1 else "")
            for r in runs]
    return ", ".join(text)


CONDITION_SHORT = {"hypo": "hypo", "hyper": "hyper", "severe_hypo": "severe hypo", "severe_hyper": "severe hyper"}
TOO_FEW = "too few"


def _short(name: str) -> str:
    return CONDITION_SHORT.get(name, name.replace("_", " "))


def _mark_highest(df: pd.DataFrame, columns, marks: dict, skip: set) -> None:
    """Mark "best" the highest value of each column (cells in ``skip`` do not count)."""
    for c in columns:
        values = pd.to_numeric(df[c], errors="coerce")
        values = values[[i for i in range(len(df)) if (i, c) not in skip]] if len(df) else values
        if values.notna().any():
            marks[(int(values.idxmax()), c)] = "best"


def clinical_tables(runs: list[RunEntry]) -> list[Table]:
    """Detection per run: one row per method, each condition's numbers as columns (tidy CSVs: one row per
    method, condition and metric, as before). An AUROC and its CI on fewer than ``MIN_POSITIVES`` positive
    (or negative) cases are shown as "too few"."""
    thr_long, op_long, thr, op = [], [], [], []
    texts: dict[tuple[int, str], str] = {}
    for i, r in enumerate(runs):
        row_t, row_o = {"method": r.display_name}, {"method": r.display_name}
        for name, c in r.metrics["clinical"]["conditions"].items():
            sh = _short(name)
            head = {"method": r.display_name, "condition": c["title"], "definition": c["definition"],
                    "positives": c["n_positive"], "prevalence": c["prevalence"], "AUROC": c["auroc"],
                    "CI lower": c["auroc_ci"]["lower"], "CI upper": c["auroc_ci"]["upper"]}
            s = c["at_threshold"]
            thr_long.append({**head, **{k: s[k] for k in ("sensitivity", "specificity", "ppv", "npv")}})
            o = c["operating_point"]
            t = o["test"] or {}
            op_long.append({"method": r.display_name, "condition": c["title"], "rule (fixed on val)": o["rule"],
                            "val sensitivity": (o["val"] or {}).get("sensitivity"),
                            **{k: t.get(k) for k in ("sensitivity", "specificity", "ppv", "npv")}})
            row_t.update({f"positives {sh}": c["n_positive"], f"AUROC {sh}": c["auroc"],
                          f"CI lower {sh}": c["auroc_ci"]["lower"], f"CI upper {sh}": c["auroc_ci"]["upper"],
                          **{f"{k if k.startswith('s') else k.upper()} {sh}": s[k]
                             for k in ("sensitivity", "specificity", "ppv", "npv")}})
            too_few = c.get("too_few", min(c["n_positive"], c["n"] - c["n_positive"]) < MIN_POSITIVES)
            if too_few:
                texts.update({(i, f"{k} {sh}"): TOO_FEW for k in ("AUROC", "CI lower", "CI upper")})
            row_o.update({f"rule {sh}": o["rule"], f"val sensitivity {sh}": (o["val"] or {}).get("sensitivity"),
                          **{f"{k if k.startswith('s') else k.upper()} {sh}": t.get(k)
                             for k in ("sensitivity", "specificity", "ppv", "npv")}})
        thr.append(row_t)
        op.append(row_o)
    conditions = runs[0].metrics["clinical"]["conditions"]
    target = conditions["hypo"]["operating_point"]["target_sensitivity"]
    definitions = "; ".join(f"{_short(n)}: {c['definition']}" for n, c in conditions.items())
    df_thr = pd.DataFrame(thr)
    marks: dict[tuple[int, str], str] = {}
    _mark_highest(df_thr, [c for c in df_thr.columns if c.startswith("AUROC ")], marks, set(texts))
    keys_t, keys_o = ("method", "condition", "definition"), ("method", "condition", "rule (fixed on val)")
    return [
        Table("clinical_thresholds", "Detection at the clinical thresholds (AUROC with 95 % CI)", df_thr,
              f"{definitions}. CI: bootstrap over subjects. Detection: predicted K meets the definition. "
              f"\"{TOO_FEW}\": fewer than {MIN_POSITIVES} positive (or negative) test cases, the AUROC is not "
              "shown (the CSVs keep it). Bold: highest AUROC.",
              marks, keys=keys_t, tidy_df=tidy_frame(pd.DataFrame(thr_long), keys_t), texts=texts),
        Table("clinical_operating_point", f"Detection at an operating point for {target:.0%} sensitivity",
              pd.DataFrame(op), "The cut-off on predicted K is chosen on the validation split.",
              keys=keys_o, tidy_df=tidy_frame(pd.DataFrame(op_long), keys_o)),
    ]


def range_table(runs: list[RunEntry]) -> Table:
    rows = []
    for r in runs:
        row = {"method": r.display_name}
        for x in r.metrics["clinical"]["mae_by_range"]:
            row[f"MAE K {x['range']}"] = x["mae"]
            row[f"n K {x['range']}"] = x["n"]
        rows.append(row)
    return Table("mae_by_range", "MAE by laboratory potassium range (mmol/L)", pd.DataFrame(rows),
                 describe=describe_k_range)


def agreement_table(runs: list[RunEntry]) -> Table:
    rows = [{"method": r.display_name, **{k: r.metrics["clinical"]["bland_altman"][k]
                                           for k in ("n", "bias", "sd", "loa_lower", "loa_upper")}}
            for r in runs]
    return Table("bland_altman", "Agreement (Bland-Altman, prediction - laboratory K)", pd.DataFrame(rows),
                 "Limits of agreement: bias +- 1.96 SD.")


def timing_table(runs: list[RunEntry]) -> Table:
    rows = []
    for r in runs:
        secs = [float(e["seconds"]) for e in r.epochs if e.get("seconds") is not None]
        sps = [float(e["samples_per_s"]) for e in r.epochs if e.get("samples_per_s") is not None]
        rows.append({"method": r.display_name, "stage": r.run.get("stage"), "epochs": len(secs),
                     "seconds per epoch": float(np.mean(secs)) if secs else None,
                     "total seconds": float(np.sum(secs)) if secs else None,
                     "samples per s": float(np.mean(sps)) if sps else None})
    return Table("training_time", "Training time per epoch (Table 3)", pd.DataFrame(rows),
                 "Mean over the epochs of the run's log; a stage-2 run counts only its own (fine-tuning) epochs.",
                 keys=("method", "stage"))


def imbalance_tables(runs: list[RunEntry]) -> list[Table]:
    """Few-shot MAE and GM per method and imbalance variant (the paper's Table 13)."""
    if not runs:
        return []
    out = []
    for metric in ("mae", "gm"):
        df = pd.DataFrame([{"method": r.display_name, "variant": r.variant or "-",
                            "value": r.metrics["regression"]["few"][metric]} for r in runs])
        wide = df.pivot_table(index="method", columns="variant", values="value", aggfunc="first", sort=False)
        wide = wide.reset_index()
        wide.columns.name = None
        out.append(Table(f"imbalance_few_{metric}", f"Few-shot {metric.upper()} across imbalance variants", wide,
                         describe=_variant_describer(metric)))
    return out


def _variant_describer(metric: str) -> Callable[[str], dict]:
    return lambda variant: {"metric": metric, "shot_group": "few", "variant": variant}


def ablation_rows(group_runs: list[RunEntry], main_runs: list[RunEntry]) -> list[RunEntry]:
    """An ablation group with, where it has none, each method's main-table baseline first (Table 12)."""
    rows = list(group_runs)
    for r in group_runs:
        if r.dist_loss and _baseline_of(r, rows) is None:
            base = _baseline_of(r, main_runs)
            if base is not None:
                rows.append(base)
    rank = {m: i for i, m in enumerate(dict.fromkeys(r.method for r in rows))}
    return sorted(rows, key=lambda r: (rank[r.method], r.dist_loss))


def all_tables(model: ReportModel) -> dict[str, Table]:
    """Every table of the report, keyed by its CSV name."""
    main = model.main_runs or model.runs
    tables = dataset_tables(model.main_dataset)
    tables.append(results_table(main, "results", results_title(model.main_dataset)))
    tables.append(improvement_table(model))
    if has_clinical(main):
        tables += clinical_tables(main)
        tables += [range_table(main), agreement_table(main)]
    tables.append(timing_table(model.runs))
    for group, runs in model.groups("ablation").items():
        tables.append(results_table(ablation_rows(runs, model.main_runs), group, f"Ablation: {group}",
                                    label=lambda r: str(r.ablation or r.display_name)))
    tables += imbalance_tables([r for r in model.runs if r.group == "imbalance"])
    return {t.name: t for t in tables}

