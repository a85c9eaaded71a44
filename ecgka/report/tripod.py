"""The TRIPOD+AI appendix of a report: ``tripod_ai.json`` and ``tripod_ai.html``.

``ITEMS`` lists the TRIPOD+AI checklist items (Collins et al., BMJ 2024) as ``(id, title, filled_by)``:
``filled_by`` is a tuple of report section ids (``report/build.py`` SECTIONS and the model card) where the
report answers the item, or None for an item a person must write (context, ethics, interpretation...). An
item whose sections are all absent from a given report (e.g. no clinical metrics) is listed as still to
write. Locations are anchors of report.html.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from ecgka.catalog import ReportDir
from ecgka.io import atomic_write_json, atomic_write_text

ITEMS: tuple[tuple[str, str, tuple[str, ...] | None], ...] = (
    ("1", "Title", None),
    ("2", "Abstract", None),
    ("3a", "Background: healthcare context and rationale", None),
    ("3b", "Background: target population and role of the model in the care pathway", None),
    ("3c", "Background: known health inequalities between groups", None),
    ("4", "Objectives (development or evaluation)", None),
    ("5a", "Data source (the dataset and its fingerprint)", ("dataset", "model-card")),
    ("5b", "Dates of data collection (withheld from the report: MIMIC dates are shifted)", None),
    ("6a", "Setting (study setting, number and location of centres)", None),
    ("6b", "Eligibility criteria (the exclusion ledger)", ("dataset",)),
    ("6c", "Treatments received", None),
    ("7", "Data preparation and quality checks (exclusions, dropped laboratory values)", ("dataset",)),
    ("8a", "Outcome definition (laboratory K, conditions and thresholds)", ("clinical",)),
    ("8b", "Outcome assessment: qualifications and demographics of assessors", None),
    ("8c", "Blinding of outcome assessment", None),
    ("9a", "Predictors: choice (ECG leads, sampling)", ("model-card",)),
    ("9b", "Predictors: definition and measurement", ("model-card",)),
    ("9c", "Predictors: qualifications of assessors", None),
    ("10", "Sample size: numbers and events per split", ("dataset", "clinical")),
    ("11", "Missing data (the exclusion ledger)", ("dataset",)),
    ("12a", "Analytical methods: how data were used (splits)", ("dataset", "model-card")),
    ("12b", "Analytical methods: handling of predictors", ("model-card",)),
    ("12c", "Analytical methods: model type, building, hyperparameters", ("model-card", "results")),
    ("12d", "Analytical methods: heterogeneity across clusters", None),
    ("12e", "Analytical methods: performance measures with CIs, calibration, utility",
     ("results", "clinical", "calibration-fit", "utility", "uncertainty")),
    ("12f", "Analytical methods: model updating or recalibration", None),
    ("12g", "Analytical methods: tests of differences between models", ("dist-loss",)),
    ("13", "Class imbalance: the imbalance methods and their rationale",
     ("dist-loss", "imbalance", "ablation-loss")),
    ("14", "Fairness: performance across subgroups", ("subgroups",)),
    ("15", "Model output: thresholds, operating points, deployment PPV/NPV, per-ECG intervals and probabilities",
     ("clinical", "utility", "uncertainty")),
    ("16", "Differences between development and evaluation data", None),
    ("17", "Ethical approval", None),
    ("18a", "Funding", None),
    ("18b", "Conflicts of interest", None),
    ("18c", "Protocol", None),
    ("18d", "Registration", None),
    ("18e", "Data availability", None),
    ("18f", "Code availability", ("model-card",)),
    ("19", "Patient and public involvement", None),
    ("20a", "Participants: flow and numbers", ("dataset",)),
    ("20b", "Participants: characteristics, label distribution per split", ("dataset",)),
    ("20c", "Participants: comparison of development and evaluation data", ("dataset",)),
    ("21", "Model development: participants and outcome events per analysis", ("dataset", "clinical")),
    ("22", "Model specification (weights, configuration)", ("model-card",)),
    ("23a", "Model performance with CIs (overall, shot regions, calibration, interval coverage per range)",
     ("results", "clinical", "calibration-fit", "uncertainty")),
    ("23b", "Performance across subgroups", ("subgroups",)),
    ("24", "Model updating", None),
    ("25", "Interpretation", None),
    ("26", "Limitations", None),
    ("27a", "Usability: handling of poor-quality or unavailable input", None),
    ("27b", "Usability: user interaction and expertise", None),
    ("27c", "Usability: future research and implications", None),
)

JSON_NAME = ReportDir.TRIPOD_JSON
HTML_NAME = ReportDir.TRIPOD_HTML


def appendix(section_ids, page: str = ReportDir.HTML) -> dict:
    """Each item with its locations in this report (only sections it holds) and whether it is filled."""
    present = set(section_ids) | {"model-card"}
    items = []
    for item_id, title, filled_by in ITEMS:
        where = [s for s in (filled_by or ()) if s in present]
        items.append({"id": item_id, "title": title, "filled": bool(where),
                      "locations": [f"{page}#{s}" for s in where],
                      "note": "" if where else "to be written by the authors"})
    return {"schema_version": 1, "checklist": "TRIPOD+AI (Collins et al., BMJ 2024)", "items": items,
            "n_filled": sum(i["filled"] for i in items), "n_to_write": sum(not i["filled"] for i in items)}


def appendix_html(data: dict) -> str:
    rows = "".join(
        f"<tr><td>{escape(i['id'])}</td><td>{escape(i['title'])}</td><td>"
        + (", ".join(f'<a href="{escape(loc)}">{escape(loc.partition("#")[2])}</a>' for loc in i["locations"])
           if i["filled"] else "<em>to be written</em>") + "</td></tr>"
        for i in data["items"])
    return ("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>TRIPOD+AI appendix</title></head><body>"
            f"<h1>TRIPOD+AI appendix</h1><p>{data['n_filled']} items filled by the report, {data['n_to_write']} "
            "to be written by the authors.</p><table><thead><tr><th>item</th><th>title</th><th>where in the "
            f"report</th></tr></thead><tbody>{rows}</tbody></table></body></html>\n")


def write_appendix(folder, section_ids) -> dict:
    """Write tripod_ai.json and tripod_ai.html into the report folder; returns the JSON content."""
    data = appendix(section_ids)
    atomic_write_json(Path(folder) / JSON_NAME, data)
    atomic_write_text(Path(folder) / HTML_NAME, appendix_html(data))
    return data
