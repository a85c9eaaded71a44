"""Champion versus challenger as a report, with the main report's tables, look and folder layout.

Two sources give one *result* (the shape of the compare stage's comparison.json: ``champion``,
``challenger``, ``datasets``, ``rows``, ``lineage``, ``gate``):

- ``ecgka report COMPARISON_DIR``: a comparison folder (``ecgka.catalog.ComparisonDir``) as written; nothing
  is recomputed, the numbers are comparison.json's (aggregates only, no prediction is read);
- ``ecgka report CHAMPION CHALLENGER --compare``: two evaluated runs, compared here
  (``ecgka.report.pair``).

Per dataset one table: each compared metric (paper order, display names) with champion, challenger, delta
(challenger - champion) and the delta's paired subject-bootstrap 95 % CI; then the dataset lineage and the
gate's decision with each rule's values (or "no gate applied"). Written like the main report
(``ecgka.catalog.ReportDir``): report.html / report.md, display CSVs in tables/, tidy CSVs in tables/tidy/
(one row per dataset and metric: dataset, metric, champion, challenger, delta, ci_lower, ci_upper, n) and
metrics.json (``{"schema_version": 2, "kind": "comparison", "comparison": result}``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
from markupsafe import escape

from ecgka import __version__
from ecgka.catalog import ComparisonDir, FolderKind, RegistryDir, ReportDir, RunDir, claim_folder
from ecgka.config import config_hash
from ecgka.errors import InputError
from ecgka.io import atomic_path, atomic_write_json, atomic_write_text
from ecgka.labels import GROUPS
from ecgka.metrics.clinical import CONDITIONS, MIN_POSITIVES
from ecgka.report import html, markdown, privacy
from ecgka.report.tables import CONDITION_SHORT, Table
from ecgka.report.tidy import snake

SHOT_ORDER = ("all", *GROUPS)
BINARY_ORDER = ("sensitivity", "specificity", "ppv", "npv")
# The compared metrics of ``ecgka report --compare``, in the paper's order (Tables 1 and 8: MAE then GM by
# shot region; then detection: each condition's AUROC, the operating point's statistics of hypo- and
# hyperkalaemia, as the compare stage): (metrics.json path, higher is better). A comparison folder's rows keep the
# compare stage's metrics, sorted the same way (``metric_rank``).
PAIR_METRICS: tuple[tuple[str, bool], ...] = (
    *((f"regression.{g}.{m}", False) for m in ("mae", "gm") for g in SHOT_ORDER),
    *((f"clinical.conditions.{c}.auroc", True) for c in CONDITIONS),
    *((f"clinical.conditions.{c}.operating_point.test.{s}", True) for c in ("hypo", "hyper") for s in BINARY_ORDER),
)
TABLE_COLUMNS = ("metric", "better", "n", "champion", "challenger", "delta", "CI lower", "CI upper")
TIDY_COLUMNS = ("dataset", "metric", "champion", "challenger", "delta", "ci_lower", "ci_upper", "n")
RULE_COLUMNS = ("metric", "passed", "champion", "challenger", "change", "gain", "relative gain", "CI lower",
                "CI upper", "n", "reasons")
TITLE = "Champion vs challenger"
PRIVACY_NOTE = ("This report holds aggregates only: metric values, their differences and confidence intervals. "
                "It contains no subject or study identifier, no date, no waveform and no individual prediction; "
                "it was checked for identifiers and dates before it was written.")


def metric_label(path: str) -> str:
    """The display name of a metrics.json path: ``regression.few.mae`` -> "MAE few",
    ``clinical.conditions.hyper.operating_point.test.ppv`` -> "PPV hyper (operating point)"."""
    parts = path.split(".")
    if parts[0] == "regression" and len(parts) == 3:
        return f"{parts[2].upper()} {parts[1]}"
    if parts[:2] == ["clinical", "conditions"] and len(parts) >= 4:
        cond, stat = CONDITION_SHORT.get(parts[2], parts[2].replace("_", " ")), parts[-1]
        name = stat if stat.startswith("s") else stat.upper()
        where = {"operating_point": " (operating point)", "at_threshold": " (threshold)"}.get(parts[3], "")
        return f"{name} {cond}{where}"
    return path


def metric_rank(path: str) -> tuple:
    """Sort key: the paper's order (``PAIR_METRICS``), other metrics after in their given order."""
    order = [p for p, _ in PAIR_METRICS]
    return (order.index(path),) if path in order else (len(order),)


def is_comparison(path: str | Path) -> bool:
    """Whether ``path`` is a complete comparison folder (its comparison.json is written last)."""
    return ComparisonDir(path).json.is_file()


def is_incomplete_comparison(path: str | Path) -> bool:
    """A comparison folder the compare stage did not finish (its other files, no comparison.json)."""
    c = ComparisonDir(path)
    return not c.json.is_file() and (c.markdown.is_file() or c.csv.is_file() or c.gate.is_file())


def refuse_other_folders(run_dirs, compare: bool = False) -> None:
    """A folder that is no evaluated run (a comparison folder among runs, an unfinished one, a registry, a
    folder without run.json) is refused in one line saying what to run instead."""
    usage = "`ecgka report CHAMPION_RUN CHALLENGER_RUN --compare --out DIR`"
    for d in run_dirs:
        if is_comparison(d):
            raise InputError(f"{d} is a comparison folder: report it alone, without --compare: `ecgka report {d} "
                             f"--out DIR`" + ("" if compare else f"; or compare two runs with {usage}"))
        if is_incomplete_comparison(d):
            raise InputError(f"{d}: an unfinished comparison folder (no {ComparisonDir.JSON}): run its compare stage "
                             f"again (`ecgka run PIPELINE.yaml`), or compare two evaluated runs with {usage}")
        if RegistryDir(d).is_registry():
            raise InputError(f"{d} is a model registry, not a run: compare its champion with a run with `ecgka "
                             f"report {d}@champion CHALLENGER_RUN --compare --out DIR`")
        if Path(d).is_dir() and not RunDir(d).run_json.is_file():
            raise InputError(f"{d}: not a run folder (no {RunDir.RUN}): give the folders written by `ecgka "
                             f"train --data DIR --out RUN`, each evaluated with `ecgka evaluate RUN --data DIR`")


def read_comparison(path: str | Path) -> dict[str, Any]:
    f = ComparisonDir(path).json
    try:
        return json.loads(f.read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"{f}: not a readable comparison ({str(e).splitlines()[0]}); write it again with the "
                         f"compare stage (`ecgka run PIPELINE.yaml`), or compare two evaluated runs with "
                         f"`ecgka report CHAMPION_RUN CHALLENGER_RUN --compare --out DIR`") from None


def _num(v: Any) -> float | None:
    return None if v is None or (isinstance(v, float) and v != v) else float(v)


def _mark(row: dict) -> str | None:
    """"better"/"worse" when the delta's CI excludes 0 (green/blue, as in the main report)."""
    lo, hi, delta = _num(row.get("delta_ci_lower")), _num(row.get("delta_ci_upper")), _num(row.get("delta"))
    if lo is None or hi is None or delta is None or lo <= 0 <= hi:
        return None
    return "better" if (delta > 0) == bool(row.get("higher_is_better")) else "worse"


def _dataset_rows(result: dict) -> dict[str, list[dict]]:
    """Rows by dataset (the result's order), each dataset's rows in the paper's metric order."""
    out: dict[str, list[dict]] = {}
    for r in result.get("rows") or []:
        out.setdefault(str(r.get("dataset")), []).append(r)
    return {d: sorted(rows, key=lambda r: metric_rank(str(r["metric"]))) for d, rows in out.items()}


FAMILIES = {"regression": ("", "Errors by shot region"), "clinical": ("_detection", "Detection")}


def too_few(row: dict) -> bool:
    """An AUROC on fewer than ``MIN_POSITIVES`` cases of the rarer class: not shown, as in the main report."""
    n = row.get("n")
    return str(row["metric"]).endswith(".auroc") and n is not None and int(n) < MIN_POSITIVES


def _shown(row: dict) -> dict:
    """The row as displayed: a "too few" AUROC keeps its n and loses its values."""
    if not too_few(row):
        return row
    return {**row, **dict.fromkeys(("champion", "challenger", "delta", "delta_ci_lower", "delta_ci_upper"))}


def _table(name: str, title: str, data: str, rows: list[dict], boot: str) -> Table:
    hidden = [metric_label(str(r["metric"])) for r in rows if too_few(r)]
    texts = {(j, col): "too few" for j, r in enumerate(rows) if too_few(r) for col in ("champion", "challenger", "delta")}
    rows = [_shown(r) for r in rows]
    df = pd.DataFrame([{"metric": metric_label(str(r["metric"])),
                        "better": "higher" if r.get("higher_is_better") else "lower", "n": r.get("n"),
                        "champion": _num(r.get("champion")), "challenger": _num(r.get("challenger")),
                        "delta": _num(r.get("delta")), "CI lower": _num(r.get("delta_ci_lower")),
                        "CI upper": _num(r.get("delta_ci_upper"))} for r in rows], columns=list(TABLE_COLUMNS))
    df["n"] = df["n"].astype("Int64")
    tidy = pd.DataFrame([{"dataset": data, "metric": r["metric"], "champion": _num(r.get("champion")),
                          "challenger": _num(r.get("challenger")), "delta": _num(r.get("delta")),
                          "ci_lower": _num(r.get("delta_ci_lower")), "ci_upper": _num(r.get("delta_ci_upper")),
                          "n": r.get("n")} for r in rows], columns=list(TIDY_COLUMNS))
    tidy["n"] = tidy["n"].astype("Int64")
    marks = {(j, "delta"): m for j, r in enumerate(rows) if (m := _mark(r))}
    return Table(name, title, df,
                 f"delta = challenger - champion; 95 % CI of the delta: subject bootstrap, both models on the same "
                 f"resampled subjects ({boot}). Green/blue: the challenger better/worse, its CI excluding 0. n: "
                 "cases the metric is computed on." + (
                     f" Too few (fewer than {MIN_POSITIVES} cases of the rarer class, not shown): {', '.join(hidden)}."
                     if hidden else ""), marks, keys=("metric",), tidy_df=tidy, texts=texts)


def dataset_tables(result: dict) -> dict[str, tuple[str, list[Table]]]:
    """Per dataset (``comparison_1``, ...: its heading and tables): the compared metrics with champion,
    challenger, delta and its paired CI, errors and detection in two tables (as the main report's results
    and clinical tables); each tidy twin has one row per metric (``TIDY_COLUMNS``, the metric as its
    metrics.json path)."""
    out = {}
    paired = result.get("paired") or {}
    boot = f"{paired['n_boot']} replicates, seed {paired['seed']}" if paired.get("n_boot") else "paired"
    for i, (data, rows) in enumerate(_dataset_rows(result).items()):
        split, fp = rows[0].get("split") or "test", rows[0].get("fingerprint")
        heading = f"Metrics on the {split} split of {data}" + (f" ({fp})" if fp and fp != data else "")
        tables = []
        for family, (suffix, title) in FAMILIES.items():
            part = [r for r in rows if str(r["metric"]).split(".")[0] == family]
            if part:
                tables.append(_table(f"comparison_{i + 1}{suffix}", title, data, part, boot))
        other = [r for r in rows if str(r["metric"]).split(".")[0] not in FAMILIES]
        if other:
            tables.append(_table(f"comparison_{i + 1}_other", "Other metrics", data, other, boot))
        out[f"comparison_{i + 1}"] = (heading, tables)
    return out


def metric_tables(result: dict) -> dict[str, Table]:
    """Every metric table of the result, keyed by its CSV name."""
    return {t.name: t for _, tables in dataset_tables(result).values() for t in tables}


def gate_table(result: dict) -> Table | None:
    """Each gate rule's values (champion, challenger, change, gain, relative gain, CI, n, passed, reasons);
    None when no gate was applied."""
    gate = result.get("gate")
    if not gate:
        return None
    rules = gate.get("rules") or []
    df = pd.DataFrame([{"metric": metric_label(str(r.get("metric"))), "passed": r.get("passed"),
                        "champion": _num(r.get("champion")), "challenger": _num(r.get("challenger")),
                        "change": _num(r.get("change")), "gain": _num(r.get("gain")),
                        "relative gain": _num(r.get("relative_gain")),
                        "CI lower": _num((r.get("ci") or {}).get("lower")),
                        "CI upper": _num((r.get("ci") or {}).get("upper")), "n": r.get("n"),
                        "reasons": "; ".join(r.get("reasons") or [])} for r in rules], columns=list(RULE_COLUMNS))
    df["n"] = df["n"].astype("Int64")
    tidy = df.rename(columns=snake).assign(metric=[r.get("metric") for r in rules])
    marks = {(i, "passed"): "better" if r.get("passed") else "worse" for i, r in enumerate(rules)}
    return Table("gate_rules", "Gate rules", df, "CI: of the gain (the change in the better direction), paired "
                 "over subjects. A rule passes when its gain, CI and case count meet the gate file's thresholds.",
                 marks, keys=("metric",), tidy_df=tidy)


def decision(result: dict) -> str:
    gate = result.get("gate")
    if not gate:
        return "no gate applied"
    return ("promote" if gate.get("promote") else "refuse: the champion stays") + (
        f" ({gate['reason']})" if gate.get("reason") else "")


def redact_dates(line: str) -> str:
    """A lineage line without its build date (the report publishes no date: ``ecgka.report.privacy``)."""
    for pattern in privacy.DATE_PATTERNS:
        line = pattern.sub("(date)", line)
    return line


def sections(result: dict) -> list[dict]:
    """The page's sections: one per dataset, the lineage, the gate (HTML items, Markdown items)."""
    out = [{"id": sid, "title": heading, "text": "", "tables": tables}
           for sid, (heading, tables) in dataset_tables(result).items()]
    lineage = [redact_dates(str(x)) for x in result.get("lineage") or []]
    out.append({"id": "lineage", "title": "Dataset lineage", "text": "" if lineage else "not recorded",
                "pre": "\n".join(lineage)})
    gate = gate_table(result)
    out.append({"id": "gate", "title": f"Gate decision: {decision(result)}",
                "text": "" if gate is not None else "No gate applied: the numbers above are not a decision "
                "(pass --gate FILE to apply a gate).", "tables": [gate] if gate is not None else []})
    return out


def subtitle(result: dict) -> str:
    return (f"champion: {result.get('champion') or 'none (first model)'} · challenger: {result.get('challenger')}"
            f" · ecgka {__version__}")


def render(result: dict) -> tuple[str, str]:
    """(HTML, Markdown) of the comparison report."""
    parts = sections(result)
    items = []
    for s in parts:
        shown = [html.table_html(t) for t in s.get("tables", [])]
        if s.get("pre"):
            shown.append(f"<pre>{escape(s['pre'])}</pre>")
        items.append({"id": s["id"], "title": s["title"], "text": s["text"], "items": shown})
    page = {"title": TITLE, "subtitle": subtitle(result), "nav": [(s["id"], s["title"]) for s in items],
            "sections": items, "privacy": PRIVACY_NOTE, "warnings": result.get("warnings") or []}
    md = [f"# {TITLE}", "", subtitle(result), ""]
    md += [f"> {w}" for w in page["warnings"]]
    for s in parts:
        md += [f"## {s['title']}", ""] + ([s["text"], ""] if s["text"] else [])
        md += [markdown.table_md(t) for t in s.get("tables", [])]
        md += [f"    {line}" for line in s.get("pre", "").splitlines()] + [""]
    md += ["## Privacy", "", PRIVACY_NOTE]
    return html.render_page(page), "\n".join(md) + "\n"


def write_result(result: dict, out_dir: str | Path, content: str, *, force: bool = False,
                 tokens: set[str] | None = None) -> Path:
    """Write the report of a comparison ``result`` into ``out_dir`` (a report folder, replaced as a whole;
    ``content`` identifies what it reports); checked for identifiers (``tokens``) and dates first."""
    out_dir = Path(out_dir)
    claim = claim_folder(out_dir, FolderKind.REPORT)
    claim.check_replace(content, force=force, what="a report of other runs")
    page, md = render(result)
    tables = {**metric_tables(result)}
    gate = gate_table(result)
    if gate is not None:
        tables[gate.name] = gate
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        out = ReportDir(tmp)
        atomic_write_text(out.html, page)
        atomic_write_text(out.markdown, md)
        for name, t in tables.items():
            out.tidy_table(name).parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(out.table(name), t.df.to_csv(index=False))
            atomic_write_text(out.tidy_table(name), t.tidy.to_csv(index=False))
        shown = {**result, "lineage": [redact_dates(str(x)) for x in result.get("lineage") or []]}
        atomic_write_json(out.metrics, {"schema_version": 2, "kind": "comparison", "ecgka_version": __version__,
                                        "comparison": shown})
        privacy.check_directory(tmp, tokens or set())
        claim.write_marker(content, root=tmp)
    return ReportDir(out_dir).html


def write_comparison_report(comparison_dir: str | Path, out_dir: str | Path, *, force: bool = False) -> Path:
    """The report of one comparison folder into ``out_dir`` (a report folder); returns report.html."""
    result = read_comparison(comparison_dir)
    content = config_hash({"comparison": str(Path(comparison_dir).resolve())})
    return write_result(result, out_dir, content, force=force)
