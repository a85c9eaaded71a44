"""The index page of a report grouped by dataset (``ecgka report --group-by-dataset``): one line per dataset
(its fingerprint, its runs, a link to its own report). Runs of different datasets are never compared:
every table, best mark and Dist Loss improvement lives in one dataset's report."""

from __future__ import annotations

from markupsafe import escape

NOTE = ("The runs were evaluated on different datasets (different test sets), so each dataset has its own "
        "report; no table compares runs across datasets.")


def index_html(title: str, split: str, groups: dict[str, list[str]], links: dict[str, str]) -> str:
    items = "".join(f'<li><a href="{escape(links[fp])}">dataset {escape(fp)}</a>: {escape(", ".join(names))}</li>'
                    for fp, names in groups.items())
    return (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{escape(title)}</title></head>"
            f"<body><h1>{escape(title)}</h1><p>{escape(NOTE)}</p><p>Split: {escape(split)}; datasets: "
            f"{len(groups)}</p><ul>{items}</ul></body></html>\n")


def index_markdown(title: str, split: str, groups: dict[str, list[str]], links: dict[str, str]) -> str:
    lines = [f"# {title}", "", NOTE, "", f"Split: {split}; datasets: {len(groups)}", ""]
    lines += [f"- [dataset {fp}]({links[fp]}): {', '.join(names)}" for fp, names in groups.items()]
    return "\n".join(lines) + "\n"
