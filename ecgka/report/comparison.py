"""``ecgka report COMPARISON_DIR``: a champion-versus-challenger comparison folder (written by the compare
stage, ``ecgka.catalog.ComparisonDir``) as a report: per dataset, every compared metric side by side with
the delta (challenger - champion) and its paired subject-bootstrap CI, then the dataset lineage and the
gate's decision with each rule's values.

Nothing is recomputed: the numbers are those of comparison.json (aggregates only, no prediction).
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import Any

import pandas as pd

from ecgka.catalog import ComparisonDir, FolderKind, ReportDir, claim_folder
from ecgka.config import config_hash
from ecgka.errors import InputError
from ecgka.io import atomic_path, atomic_write_json, atomic_write_text

RULE_COLUMNS = ("metric", "passed", "champion", "challenger", "change", "gain", "relative_gain", "ci_lower",
                "ci_upper", "n", "reasons")


def is_comparison(path: str | Path) -> bool:
    """Whether ``path`` is a complete comparison folder (its comparison.json is written last)."""
    return ComparisonDir(path).json.is_file()


def read_comparison(path: str | Path) -> dict[str, Any]:
    f = ComparisonDir(path).json
    try:
        return json.loads(f.read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"{f}: not a readable comparison ({e}); run the compare stage again") from e


def metric_tables(result: dict) -> dict[str, pd.DataFrame]:
    """One table per dataset: metric, better, champion, challenger, delta, delta CI lower / upper."""
    rows = pd.DataFrame(result.get("rows") or [])
    out = {}
    if rows.empty:
        return out
    for i, (_, part) in enumerate(rows.groupby("dataset", sort=False)):
        df = pd.DataFrame({"metric": part["metric"],
                           "better": ["higher" if h else "lower" for h in part["higher_is_better"]],
                           "champion": part["champion"], "challenger": part["challenger"], "delta": part["delta"],
                           "delta CI lower": part["delta_ci_lower"], "delta CI upper": part["delta_ci_upper"]})
        out[f"comparison_{i + 1}"] = df.reset_index(drop=True)
    return out


def gate_table(result: dict) -> pd.DataFrame:
    """Each gate rule's values: champion, challenger, change, gain, relative gain, CI, n, passed, reasons."""
    rules = (result.get("gate") or {}).get("rules") or []
    return pd.DataFrame([{"metric": r.get("metric"), "passed": r.get("passed"), "champion": r.get("champion"),
                          "challenger": r.get("challenger"), "change": r.get("change"), "gain": r.get("gain"),
                          "relative_gain": r.get("relative_gain"), "ci_lower": (r.get("ci") or {}).get("lower"),
                          "ci_upper": (r.get("ci") or {}).get("upper"), "n": r.get("n"),
                          "reasons": "; ".join(r.get("reasons") or [])} for r in rules], columns=list(RULE_COLUMNS))


def _cell(v: Any) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _html_table(df: pd.DataFrame) -> str:
    head = "".join(f"<th>{escape(str(c))}</th>" for c in df.columns)
    body = "".join("<tr>" + "".join(f"<td>{escape(_cell(v))}</td>" for v in row) + "</tr>"
                   for row in df.itertuples(index=False))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _md_table(df: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def _decision(result: dict) -> str:
    gate = result.get("gate") or {}
    return ("promote" if gate.get("promote") else "refuse: the champion stays") + (
        f" ({gate['reason']})" if gate.get("reason") else "")


def render(result: dict) -> tuple[str, str]:
    """(HTML, Markdown) of the comparison report."""
    tables, gate = metric_tables(result), gate_table(result)
    datasets = result.get("datasets") or []
    title = "Champion vs challenger"
    who = (f"champion: {result.get('champion') or 'none (first model)'}; challenger: {result.get('challenger')}")
    html = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title></head><body>",
            f"<h1>{title}</h1><p>{escape(who)}</p>"]
    md = [f"# {title}", "", who, ""]
    for (name, df), data in zip(tables.items(), datasets, strict=False):
        head = f"Metrics on {data}: delta = challenger - champion, 95 % CI paired over subjects"
        html += [f'<h2 id="{name}">{escape(head)}</h2>', _html_table(df)]
        md += [f"## {head}", "", _md_table(df), ""]
    lineage = result.get("lineage") or []
    html += ['<h2 id="lineage">Dataset lineage</h2><pre>' + escape("\n".join(lineage)) + "</pre>",
             f'<h2 id="gate">Gate decision: {escape(_decision(result))}</h2>', _html_table(gate), "</body></html>\n"]
    md += ["## Dataset lineage", "", *[f"    {line}" for line in lineage], "",
           f"## Gate decision: {_decision(result)}", "", _md_table(gate), ""]
    return "".join(html), "\n".join(md)


def write_comparison_report(comparison_dir: str | Path, out_dir: str | Path, *, force: bool = False) -> Path:
    """The report of one comparison folder into ``out_dir`` (a report folder); returns report.html."""
    result = read_comparison(comparison_dir)
    out_dir = Path(out_dir)
    claim = claim_folder(out_dir, FolderKind.REPORT)
    content = config_hash({"comparison": str(Path(comparison_dir).resolve())})
    claim.check_replace(content, force=force, what="a report of other runs")
    html, md = render(result)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        out = ReportDir(tmp)
        atomic_write_text(out.html, html)
        atomic_write_text(out.markdown, md)
        for name, df in {**metric_tables(result), "gate_rules": gate_table(result)}.items():
            out.table(name).parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(out.table(name), df.to_csv(index=False))
        atomic_write_json(out.metrics, {"schema_version": 1, "comparison": result})
        claim.write_marker(content, root=tmp)
    return ReportDir(out_dir).html
