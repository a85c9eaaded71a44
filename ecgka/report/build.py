"""``write_report(run_dirs, out_dir)``: the HTML and Markdown pages, display and tidy CSV tables, figures and
metrics.json of a report folder (file names: ``ecgka.catalog.ReportDir``).

The whole output directory appears at once (written to a temporary sibling, checked for identifiers and
dates, then renamed); a failed check publishes nothing. ``out_dir`` must be missing, empty or a report
folder (``ecgka.catalog.claim_folder``): a report is derived output, so a report of the same runs and split
is regenerated freely; a report folder of other runs is replaced only with ``force``.
"""

from __future__ import annotations

import json
from fnmatch import fnmatchcase
from pathlib import Path

import yaml

from ecgka import __version__
from ecgka.catalog import FolderKind, ReportDir, claim_folder
from ecgka.config import config_hash, validate_config
from ecgka.io import atomic_path, atomic_write_json, atomic_write_text
from ecgka.metrics.clinical import MIN_POSITIVES
from ecgka.report import comparison, html, index, markdown, pair, privacy, tripod, uncertainty, utility
from ecgka.report.collect import (
    ReportModel,
    by_dataset,
    check_distinct,
    checkpoint_changed,
    collect,
    has_clinical,
)
from ecgka.report.figures import all_figures
from ecgka.report.render_utils import fmt, model_card
from ecgka.report.subgroups import SECTION as SUBGROUP_SECTION
from ecgka.report.subgroups import report_tables as subgroup_tables
from ecgka.report.tables import Table, all_tables
from ecgka.report.wording import grid_text, wording

# The page's sections, in order, mirroring the paper's tables: (section id, title, tables, figures). Tables are
# CSV names or shell patterns (``ablation_*batch*``); a table goes to the first section that names it, and a
# section without any table or figure is left out. To add a section, append an entry naming its tables and
# figures (made by ``all_tables`` / ``all_figures``).
SECTIONS = [
    ("dataset", "Dataset", ("dataset_counts", "exclusions", "shot_regions"), ("label_histogram",)),
    ("results", "Main results by shot region (Tables 1, 8)", ("results",), ()),
    ("dist-loss", "Each method + Dist Loss (Table 2)", ("dist_loss_improvement",), ()),
    ("clinical", "Clinical detection and agreement",
     ("clinical_thresholds", "clinical_operating_point", "mae_by_range", "bland_altman", *uncertainty.CLINICAL_TABLES),
     ("roc", "calibration", *uncertainty.CLINICAL_FIGURES)),
    ("distributions", "Predictions", (), ("distributions", "few_shot_errors", "scatter", "bland_altman")),
    ("timing", "Training time (Table 3)", ("training_time",), ()),
    ("ablation-batch", "Batch-size ablation", ("ablation*batch*",), ()),
    ("ablation-loss", "Loss ablation (Table 12)", ("ablation*loss*",), ()),
    ("ablation", "Other ablations", ("ablation*",), ()),
    ("imbalance", "Imbalance ratios (Table 13)", ("imbalance_few_mae", "imbalance_few_gm"), ("imbalance_variants",)),
    utility.CALIBRATION_SECTION,
    utility.UTILITY_SECTION,
    uncertainty.SECTION,
    SUBGROUP_SECTION,
]


def _disqualified(r) -> list[str]:
    """Why a run may not be named best "at a glance": an AUROC below 0.5 (worse than chance: a sign flip or
    a broken model) or an empty test shot group (its overall numbers leave out a region)."""
    why = []
    for c in (r.metrics.get("clinical") or {}).get("conditions", {}).values():
        if c.get("auroc") is not None and c["auroc"] < 0.5 and not c.get("too_few"):
            why.append(f"{c['title'].lower()} AUROC {fmt(c['auroc'])} is below 0.5 (worse than chance)")
    empty = [g for g in ("many", "median", "few") if not r.metrics["regression"].get(g, {}).get("n")]
    if empty:
        why.append(f"no test {wording(r.dataset).samples if r.dataset else 'samples'} in the "
                   f"{', '.join(empty)}-shot group")
    return why


def warnings(model: ReportModel) -> list[str]:
    """What the page states first, in red: runs excluded from "at a glance" and conditions with no (or too
    few) positive test cases (an empty hyperkalaemia test set is stated, not hidden)."""
    runs = model.main_runs or model.runs
    out = [f"{r.display_name}: {'; '.join(why)}; not named best at a glance." for r in runs
           for why in [_disqualified(r)] if why]
    if has_clinical(runs):
        for c in runs[0].metrics["clinical"]["conditions"].values():
            if c["n_positive"] == 0:
                out.append(f"The {model.split} set holds no {c['title'].lower()} case ({c['definition']}): its "
                           f"AUROC, sensitivity and PPV are undefined.")
            elif c.get("too_few"):
                out.append(f"The {model.split} set holds only {c['n_positive']} {c['title'].lower()} case(s) "
                           f"({c['definition']}), fewer than {c.get('min_positives', MIN_POSITIVES)}: its AUROC "
                           f"is shown as \"too few\".")
    return out


def _glance(model: ReportModel) -> list[dict]:
    runs = model.main_runs or model.runs
    eligible = [r for r in runs if not _disqualified(r)]
    cards = []
    for label, key in (("Lowest few-shot MAE", ("few", "mae")), ("Lowest overall MAE", ("all", "mae"))):
        vals = [(r.metrics["regression"][key[0]][key[1]], r.display_name) for r in eligible]
        vals = [v for v in vals if v[0] is not None]
        if vals:
            v, name = min(vals)
            cards.append({"label": label, "value": fmt(v), "detail": name})
    for cond in ("hyper", "hypo") if has_clinical(runs) else ():
        vals = [(r.metrics["clinical"]["conditions"][cond]["auroc"], r.display_name) for r in eligible
                if not r.metrics["clinical"]["conditions"][cond].get("too_few")]
        vals = [v for v in vals if v[0] is not None]
        title = runs[0].metrics["clinical"]["conditions"][cond]["title"]
        if vals:
            v, name = max(vals)
            cards.append({"label": f"Best {title.lower()} AUROC", "value": fmt(v), "detail": name})
        else:
            cards.append({"label": f"Best {title.lower()} AUROC", "value": "none",
                          "detail": "too few test cases or no eligible model"})
    m = runs[0].metrics
    samples = wording(model.main_dataset).samples
    cards.append({"label": f"{model.split} set", "value": f"{m['n']} {samples}", "detail": f"{m['n_subjects']} subjects"})
    return cards


def place_tables(tables: dict[str, Table]) -> dict[str, list[Table]]:
    """Section id -> its tables: each table in the first section whose names or patterns match it."""
    placed: dict[str, list[Table]] = {sid: [] for sid, *_ in SECTIONS}
    used: set[str] = set()
    for sid, _, names_t, _ in SECTIONS:
        for n in names_t:
            for key, t in tables.items():
                if key not in used and fnmatchcase(key, n):
                    placed[sid].append(t)
                    used.add(key)
    return placed


def _section_items(tables: list[Table], figures: dict, names_f, render_t, render_f) -> list[str]:
    return [render_t(t) for t in tables] + [render_f(figures[n]) for n in names_f if n in figures]


DEFAULT_TITLE = "ECG potassium regression: evaluation report"


def page_model(model: ReportModel, tables: dict[str, Table], figures: dict, title: str | None = None) -> dict:
    sections = []
    placed = place_tables(tables)
    for sid, heading, _, names_f in SECTIONS:
        items = [html.table_html(t) for t in placed[sid]] + html.figures_html(  # many figures fold
            [figures[n] for n in names_f if n in figures])
        if items:
            sections.append({"id": sid, "title": heading, "text": "", "items": items})
    card = model_card(model)
    configs = [(f"{r.display_name} ({r.name})", yaml.safe_dump(r.config, sort_keys=False)) for r in model.runs
               if r.config]
    return {"title": title or wording(model.main_dataset).title, "split": model.split, "n_runs": len(model.runs), "version": __version__,
            "fingerprint": model.main_dataset.fingerprint or "unknown", "glance": _glance(model),
            "warnings": warnings(model),
            "nav": [(s["id"], s["title"]) for s in sections] + [("model-card", "Model card")],
            "sections": sections, "card": card, "run_configs": configs,
            "dataset_config": yaml.safe_dump(card["dataset_config"], sort_keys=False)
            if card["dataset_config"] else ""}


OMITTED_KEYS = ("figures", "dataset", "uncertainty")  # per run: the figures' aggregates (in each run's own
# metrics.json), the dataset block (once per dataset under "datasets") and the conformal coverage per range and
# level (issue 23, about 6 kB a run; the tidy interval_coverage and probability_brier tables hold the shown runs'):
# about 100 runs would otherwise take several MB


def report_metrics(model: ReportModel) -> dict:
    """metrics.json of the report: every run's metrics.json as read (the tables' source) less
    ``OMITTED_KEYS``; each evaluated dataset's block once, under its fingerprint."""
    return {"schema_version": 2, "split": model.split, "ecgka_version": __version__,
            "omitted_from_runs": list(OMITTED_KEYS),
            "datasets": {fp: next((r.metrics.get("dataset") for r in model.runs if (r.fingerprint or "unknown") == fp),
                                  None) for fp in model.datasets},
            "runs": {r.name: {"display_name": r.display_name, "method": r.method, "dist_loss": r.dist_loss,
                              "group": r.group, "ablation": r.ablation, "variant": r.variant,
                              "dataset_fingerprint": r.fingerprint or "unknown",
                              "metrics": {k: v for k, v in r.metrics.items() if k not in OMITTED_KEYS}}
                     for r in model.runs}}


def report_content(run_dirs, split: str, dataset: str | None = None, grouped: bool = False) -> str:
    """What defines a report folder's content: its runs (resolved paths), split, evaluated dataset, layout."""
    return config_hash({"runs": sorted(str(Path(d).resolve()) for d in run_dirs), "split": split,
                        "dataset": dataset, "grouped": grouped})


def reevaluate_changed(run_dirs, split: str, dataset: str | None = None, log=None) -> list[Path]:
    """Evaluate again (on the run's own dataset, with the recorded options) every run whose evaluated
    checkpoint has changed since; returns those runs. An evaluation on another dataset is not redone
    (its folder is not recorded): refused in one line."""
    from ecgka.catalog import RunDir
    from ecgka.errors import InputError
    from ecgka.evaluation.config import EvalConfig
    from ecgka.evaluation.evaluate import evaluate_run

    redone = []
    for d in run_dirs:
        rd = RunDir(d)
        if not rd.metrics_path(split, dataset).is_file():
            continue
        metrics = rd.read_metrics(split, dataset)
        why = checkpoint_changed(rd, metrics)
        if why is None:
            continue
        data = rd.read_run().get("dataset_dir")
        if dataset is not None or not data:
            raise InputError(f"{rd.metrics_path(split, dataset)}: {why}; re-run `ecgka evaluate {d} --data DIR"
                             f"{' --allow-other-dataset' if dataset else ''}`")
        if log:
            log(f"{d}: {why}: evaluating it again on {data}")
        evaluate_run(d, data, split, validate_config(EvalConfig, metrics.get("config") or {},
                                                     source=str(rd.metrics_path(split))))
        redone.append(Path(d))
    return redone


def write_report(run_dirs, out_dir, split: str = "test", title: str | None = None, *, force: bool = False,
                 dataset: str | None = None, group_by_dataset: bool = False, reevaluate: bool = False,
                 compare: bool = False, gate=None, n_boot: int = 1000, seed: int = 0, log=None) -> Path:
    """Build the report of ``run_dirs`` (each evaluated on ``split``; on ``dataset``, a fingerprint, when
    given) into ``out_dir``; returns report.html. Runs evaluated on different datasets are refused, or with
    ``group_by_dataset`` get one report each (``datasets/<fingerprint>/``) under an index page. A run whose
    checkpoint changed after its evaluation is refused, or with ``reevaluate`` evaluated again first.

    One comparison folder (the compare stage's), or two runs with ``compare`` (champion, challenger: deltas
    with paired CIs of ``n_boot`` replicates from ``seed``; ``gate``: a decision function,
    ``ecgka.report.pair``), give the champion-versus-challenger report (``ecgka.report.comparison``)."""
    out_dir = Path(out_dir)
    if compare:
        return pair.write_pair_report(run_dirs, out_dir, split, dataset=dataset, n_boot=n_boot, seed=seed,
                                      gate=gate, force=force)
    if len(run_dirs) == 1 and comparison.is_comparison(run_dirs[0]):  # a compare stage's folder (issue 22 §6)
        return comparison.write_comparison_report(run_dirs[0], out_dir, force=force)
    check_distinct(run_dirs)
    if reevaluate:
        reevaluate_changed(run_dirs, split, dataset, log)
    claim = claim_folder(out_dir, FolderKind.REPORT)
    content = report_content(run_dirs, split, dataset, group_by_dataset)
    replacing = claim.check_replace(content, force=force, what="a report of other runs")
    comparison.refuse_other_folders(run_dirs)  # a comparison folder among runs, a registry: what to run instead
    model = collect([Path(d) for d in run_dirs], split, dataset, one_dataset=not group_by_dataset)
    tokens = privacy.run_identifiers(run_dirs)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        (_write_grouped if group_by_dataset else _write_one)(ReportDir(tmp), model, title)
        privacy.check_directory(tmp, tokens)
        claim.write_marker(content, root=tmp)  # after the check: the marker's date is no patient's
    if replacing and log:
        log(f"{out_dir}: replaced a report of other runs (--force)")
    return ReportDir(out_dir).html


def _write_one(out: ReportDir, model: ReportModel, title: str | None) -> None:
    """The report of runs evaluated on one dataset."""
    tables = {**all_tables(model), **utility.report_tables(model)}
    tables |= subgroup_tables(model)  # ecgka.report.subgroups
    tables |= uncertainty.report_tables(model)  # ecgka.report.uncertainty (issue 23)
    figures = {f.name: f for f in all_figures(model)} | utility.report_figures(model)
    figures |= uncertainty.report_figures(model)
    page = page_model(model, tables, figures, title)
    page["privacy"] = html.privacy_note(grid_text(model.main_dataset))
    page["appendix"] = tripod.HTML_NAME  # linked from the page's navigation
    placed = place_tables(tables)
    sections_md = [(heading, _section_items(placed[sid], figures, nf, markdown.table_md, markdown.figure_md))
                   for sid, heading, _, nf in SECTIONS]
    _write_contents(out, model, page, sections_md, tables, figures)
    tripod.write_appendix(out.path, [s["id"] for s in page["sections"]])


def _write_grouped(out: ReportDir, model: ReportModel, title: str | None) -> None:
    """One report per dataset (comparisons only within it) and an index listing every dataset."""
    title = title or DEFAULT_TITLE
    parts = by_dataset(model)
    links = {fp: str(out.dataset_report(fp).html.relative_to(out.path)) for fp in parts}
    for fp, part in parts.items():
        out.dataset_report(fp).path.mkdir(parents=True)
        _write_one(out.dataset_report(fp), part, f"{title} (dataset {fp})")
    groups = {fp: [r.display_name for r in part.runs] for fp, part in parts.items()}
    atomic_write_text(out.html, index.index_html(title, model.split, groups, links))
    atomic_write_text(out.markdown, index.index_markdown(title, model.split, groups, links))
    atomic_write_json(out.metrics, {"schema_version": 1, "split": model.split, "ecgka_version": __version__,
                                    "grouped_by_dataset": True,
                                    "datasets": {fp: {"runs": [r.name for r in part.runs], "report": links[fp]}
                                                 for fp, part in parts.items()}})


def _write_contents(out: ReportDir, model: ReportModel, page: dict, sections_md, tables: dict[str, Table],
                    figures: dict) -> None:
    atomic_write_text(out.html, html.render_html(page))
    atomic_write_text(out.markdown, markdown.render_markdown(page, [s for s in sections_md if s[1]], page["card"]))
    for name, table in tables.items():
        atomic_write_text(out.table(name), table.df.to_csv(index=False))
        atomic_write_text(out.tidy_table(name), table.tidy.to_csv(index=False))
    for name, fig in figures.items():
        out.figure(name).parent.mkdir(exist_ok=True)
        out.figure(name).write_bytes(fig.png)
    # compact (no indentation): about 100 runs' metrics would otherwise take most of the folder's size
    atomic_write_text(out.metrics, json.dumps(report_metrics(model), separators=(",", ":"), default=str) + "\n")
