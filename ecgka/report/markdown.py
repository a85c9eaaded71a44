"""report.md: the same sections, tables and figures as the HTML page, as GitHub-flavoured Markdown."""

from __future__ import annotations

from ecgka.catalog import ReportDir
from ecgka.report.render_utils import fmt


def _cell(value) -> str:
    return fmt(value).replace("|", "\\|")


def table_md(table) -> str:
    cols = list(table.df.columns)
    lines = [f"### {table.title}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for i, (_, row) in enumerate(table.df.iterrows()):
        cells = []
        for c in cols:
            shown = table.texts.get((i, c)) if getattr(table, "texts", None) else None
            text = _cell(row[c]) if shown is None else shown
            mark = table.marks.get((i, c))
            cells.append(f"**{text}**" if mark in ("best", "better") else (f"_{text}_" if mark else text))
        lines.append("| " + " | ".join(cells) + " |")
    if table.note:
        lines += ["", table.note + (" Markdown: bold = best or improved, italic = worse." if table.marks else "")]
    return "\n".join(lines) + "\n"


def figure_md(fig) -> str:
    return f"![{fig.title}]({ReportDir('').figure(fig.name).as_posix()})\n\n*{fig.title}.* {fig.caption}\n"


def render_markdown(page: dict, sections_md: list[tuple[str, list[str]]], card: dict) -> str:
    out = [f"# {page['title']}", "",
           f"Split: **{page['split']}** · {page['n_runs']} run(s) · dataset {page['fingerprint']} · "
           f"ecgka {page['version']}", ""]
    if page.get("warnings"):
        out += ["> **Check before reading:**"] + [f"> - {w}" for w in page["warnings"]] + [""]
    out += ["## At a glance", ""]
    out += [f"- {c['label']}: **{c['value']}** {c['detail']}" for c in page["glance"]]
    for title, items in sections_md:
        out += ["", f"## {title}", ""] + items
    out += ["", "## Model card", ""]
    out += [f"- {k}: {v}" for k, v in card["data"].items()]
    out += ["", "Intended use: " + card["intended_use"], "", "Limits:"] + [f"- {x}" for x in card["limits"]]
    out += ["", "## Privacy", "", page["privacy"]]
    return "\n".join(out) + "\n"
