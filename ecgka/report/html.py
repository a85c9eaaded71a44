"""The self-contained HTML page: inline CSS, figures as base64 PNG, no script, no network resource."""

from __future__ import annotations

import base64

import jinja2
import pandas as pd
from markupsafe import escape

from ecgka.report.render_utils import fmt

CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0 auto;max-width:1200px;
padding:16px 28px;color:#222;line-height:1.4}
h1{margin-bottom:0}h2{border-bottom:2px solid #4c72b0;padding-bottom:2px;margin-top:34px}
.sub{color:#666;margin-top:4px}nav a{margin-right:12px;font-size:14px}
table{border-collapse:collapse;margin:8px 0 4px 0;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}th{background:#eef1f7}
td.txt,th.txt{text-align:left}td.best{font-weight:bold;background:#fff3c4}
td.better{font-weight:bold;color:#1a7f37;background:#eaf7ee}td.worse{font-weight:bold;color:#1f4fb0;background:#edf1fb}
td.best.better,td.best.worse{text-decoration:underline}
.wide{overflow-x:auto}.alert{background:#fdecea;border:1px solid #c62828;color:#8e1b1b;padding:8px 12px}
summary{cursor:pointer;font-weight:bold}
.note{color:#555;font-size:12px;margin:0 0 14px 0}figure{margin:10px 0 24px 0}
figure img{max-width:100%;border:1px solid #ddd}figcaption{font-size:12px;color:#555}
.glance{display:flex;flex-wrap:wrap;gap:12px}.card{border:1px solid #ccd;border-radius:6px;padding:8px 14px;
background:#f7f9fc;min-width:200px}.card b{font-size:20px;display:block}
pre{background:#f6f6f6;padding:8px;font-size:12px;overflow-x:auto}details{margin:6px 0}
.privacy{background:#fff8e5;border:1px solid #e8d9a8;padding:8px 12px;font-size:13px}
"""

TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{{ title }}</title><style>{{ css | safe }}</style></head><body>
<h1>{{ title }}</h1>
<p class="sub">Split: <b>{{ split }}</b> · {{ n_runs }} run(s) · dataset {{ fingerprint }} · ecgka {{ version }}</p>
<nav>{% for id, title in nav %}<a href="#{{ id }}">{{ title }}</a>{% endfor %}{% if appendix %}<a href="{{ appendix }}">TRIPOD+AI appendix</a>{% endif %}</nav>
{% if warnings %}<div class="alert" id="warnings"><b>Check before reading:</b><ul>
{% for w in warnings %}<li>{{ w }}</li>{% endfor %}</ul></div>{% endif %}
<h2 id="glance">At a glance</h2><div class="glance">
{% for card in glance %}<div class="card">{{ card.label }}<b>{{ card.value }}</b>{{ card.detail }}</div>{% endfor %}
</div>
{% for section in sections %}
<h2 id="{{ section.id }}">{{ section.title }}</h2>
{% if section.text %}<p>{{ section.text }}</p>{% endif %}
{% for item in section["items"] %}{{ item | safe }}{% endfor %}
{% endfor %}
<h2 id="model-card">Model card</h2>
<table>{% for k, v in card.data.items() %}<tr><th class="txt">{{ k }}</th><td class="txt">{{ v }}</td></tr>{% endfor %}</table>
<h3>Intended use</h3><p>{{ card.intended_use }}</p>
<h3>Limits</h3><ul>{% for x in card.limits %}<li>{{ x }}</li>{% endfor %}</ul>
<h3>Configurations</h3>
{% if dataset_config %}<details><summary>dataset build config</summary><pre>{{ dataset_config }}</pre></details>{% endif %}
{% for name, cfg in run_configs %}<details><summary>{{ name }}</summary><pre>{{ cfg }}</pre></details>{% endfor %}
<h2 id="privacy">Privacy</h2>
<p class="privacy">{{ privacy }}</p>
</body></html>
"""

def privacy_note(grid: str = "0.1 mmol/L") -> str:
    """The page's privacy line; ``grid``: the width of one label cell ("0.1 mmol/L", "1 years")."""
    return ("This report holds aggregates only: counts, error statistics, curves and 2-D histograms on a "
            f"{grid} grid. It contains no subject or study identifier, no date, no waveform and no individual "
            "prediction; it was checked for identifiers and dates before it was written.")


PRIVACY_NOTE = privacy_note()


COLLAPSE_ROWS = 15  # a table with more rows is folded (<details>), its title as the summary


def table_html(table) -> str:
    """One table with its title, number formatting, marks (best/better/worse), shown texts and note; a
    long table is folded under its title."""
    cols = list(table.df.columns)
    head = "".join(f'<th class="{"" if pd.api.types.is_numeric_dtype(table.df[c]) else "txt"}">{escape(c)}</th>'
                   for c in cols)
    rows = []
    for i, (_, row) in enumerate(table.df.iterrows()):
        cells = []
        for c in cols:
            classes = ["txt"] if isinstance(row[c], str) else []
            mark = table.marks.get((i, c))
            if mark:
                classes.append(mark)
            text = table.texts.get((i, c)) if getattr(table, "texts", None) else None
            cells.append(f'<td class="{" ".join(classes)}">{escape(fmt(row[c]) if text is None else text)}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    note = f'<p class="note">{escape(table.note)}</p>' if table.note else ""
    body = (f'<div class="wide"><table data-name="{table.name}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div>{note}")
    if len(rows) > COLLAPSE_ROWS:
        return (f'<details id="t-{table.name}"><summary>{escape(table.title)} ({len(rows)} rows)</summary>'
                f"{body}</details>")
    return f'<h3 id="t-{table.name}">{escape(table.title)}</h3>{body}'


def figure_html(fig) -> str:
    data = base64.b64encode(fig.png).decode("ascii")
    return (f'<figure id="f-{fig.name}"><img alt="{escape(fig.title)}" src="data:image/png;base64,{data}">'
            f"<figcaption><b>{escape(fig.title)}.</b> {escape(fig.caption)}</figcaption></figure>")


FIGURES_OPEN = 6  # a section with more figures shows these and folds the rest (<details>), as long tables fold


def figures_html(figs: list) -> list[str]:
    """A section's figures: the first ``FIGURES_OPEN`` shown, the rest folded under one summary line that
    names them (the page stays readable with many per-method figures)."""
    items = [figure_html(f) for f in figs[:FIGURES_OPEN]]
    rest = figs[FIGURES_OPEN:]
    if rest:
        names = ", ".join(f.title for f in rest)
        items.append(f'<details class="figures"><summary>{len(rest)} more figure{"s" if len(rest) > 1 else ""}: '
                     f'{escape(names)}</summary>{"".join(figure_html(f) for f in rest)}</details>')
    return items


PAGE_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{{ title }}</title><style>{{ css | safe }}</style></head><body>
<h1>{{ title }}</h1>
<p class="sub">{{ subtitle }}</p>
<nav>{% for id, title in nav %}<a href="#{{ id }}">{{ title }}</a>{% endfor %}</nav>
{% if warnings %}<div class="alert" id="warnings"><b>Check before reading:</b><ul>
{% for w in warnings %}<li>{{ w }}</li>{% endfor %}</ul></div>{% endif %}
{% for section in sections %}
<h2 id="{{ section.id }}">{{ section.title }}</h2>
{% if section.text %}<p>{{ section.text }}</p>{% endif %}
{% for item in section["items"] %}{{ item | safe }}{% endfor %}
{% endfor %}
<h2 id="privacy">Privacy</h2>
<p class="privacy">{{ privacy }}</p>
</body></html>
"""


def render_page(page: dict) -> str:
    """A page of sections only (title, subtitle, navigation, sections, privacy) with the main report's look:
    the champion-versus-challenger report (``ecgka.report.comparison``)."""
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return env.from_string(PAGE_TEMPLATE).render(css=CSS, **{"privacy": PRIVACY_NOTE, "warnings": [], **page})


def render_html(page: dict) -> str:
    """Fill the template from the page model built by ``build.page_model``."""
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return env.from_string(TEMPLATE).render(css=CSS, **{"privacy": PRIVACY_NOTE, "warnings": [], **page})
