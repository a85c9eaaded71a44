"""The report's "Calibrated uncertainty" section, its Brier table and reliability curves in the clinical section,
and decision curves drawn from the conformal layer's probabilities (issue 23)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

from ecgka.catalog import ReportDir, RunDir
from ecgka.report import tripod, write_report

sys.path.insert(0, str(Path(__file__).parent))
from report_factory import fake_manifest, make_run  # noqa: E402


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("unc_report")
    m = fake_manifest(root / "data")
    runs = [make_run(root, "vanilla", m, n_boot=20),
            make_run(root, "dist", m, dist_loss=True, shrink=0.2, seed=2, n_boot=20)]
    return ReportDir(write_report(runs, root / "report").parent), runs


def _metrics(run) -> dict:
    return RunDir(run).read_metrics("test")


def test_section_table_and_figure(report):
    out, _ = report
    page = out.html.read_text()
    assert 'id="uncertainty"' in page and "t-interval_coverage" in page and "f-interval_coverage" in page
    section = page[page.index('id="uncertainty"'):]
    assert "f-interval_coverage" in section
    clinical = page[page.index('id="clinical"'):page.index('id="uncertainty"')]
    assert "t-probability_brier" in clinical and "f-reliability" in clinical  # in the clinical section
    for name in ("interval_coverage", "reliability"):
        assert out.figure(name).is_file() and out.figure(name).read_bytes()[:4] == b"\x89PNG"
    assert "## Calibrated uncertainty" in out.markdown.read_text()


def test_table_numbers_are_metrics_json(report):
    out, runs = report
    shown = pd.read_csv(out.table("interval_coverage")).set_index(["method", "output"])
    tidy = pd.read_csv(out.tidy_table("interval_coverage"))
    sizes = {}  # a range's n goes into its column titles when every run has the same (one test set)
    for run in runs:
        for r in _metrics(run)["uncertainty"]["coverage"]:
            sizes.setdefault(r["range"], set()).add(r["n"])
    title = {k: f"{k} (n={min(v)})" if len(v) == 1 else k for k, v in sizes.items()}
    for run, method in zip(runs, ("Vanilla", "Vanilla + Dist Loss"), strict=True):
        rows = _metrics(run)["uncertainty"]["coverage"]
        at90 = [r for r in rows if r["level"] == 0.9]
        assert [c for c in shown.columns if c.startswith("coverage ")] == \
            [f"coverage {title[r['range']]}" for r in at90]  # all, shot groups, clinical ranges
        for r in at90:  # two rows per method: the interval, and the accepted set whose hull it is
            assert shown.loc[(method, "interval (k_lo, k_hi)"), f"coverage {title[r['range']]}"] == pytest.approx(r["coverage"])
            assert shown.loc[(method, "interval (k_lo, k_hi)"), f"width {title[r['range']]}"] == pytest.approx(r["mean_width"])
            assert shown.loc[(method, "accepted set (k_set)"), f"coverage {title[r['range']]}"] == \
                pytest.approx(r["set_coverage"])
            assert shown.loc[(method, "accepted set (k_set)"), f"width {title[r['range']]}"] == \
                pytest.approx(r["set_mean_length"])
            assert r["set_coverage"] <= r["coverage"] and r["set_ci_lower"] <= r["set_coverage"] <= r["set_ci_upper"]
        layer = _metrics(run)["uncertainty"]["layer"]
        assert layer["score"] in ("calibrated", "residual")
        assert shown.loc[(method, "interval (k_lo, k_hi)"), "score"] == shown.loc[(method, "accepted set (k_set)"), "score"] == layer["score"]
        mine = tidy[tidy["method"] == method]
        assert len(mine) == len(rows) == 3 * len(at90)  # every level in the tidy CSV
        for r in rows:
            got = mine[(mine["range"] == r["range"]) & (mine["level"] == r["level"])].iloc[0]
            for key in ("n", "coverage", "ci_lower", "ci_upper", "mean_width", "set_coverage", "set_ci_lower",
                        "set_ci_upper", "set_mean_length"):
                assert got[key] == pytest.approx(r[key], abs=1e-6)  # the tidy CSV: 6 decimals
        brier = pd.read_csv(out.table("probability_brier")).set_index("method").loc[method]
        probs = _metrics(run)["uncertainty"]["probabilities"]
        assert brier["Brier hyper"] == pytest.approx(probs["hyper"]["brier"])
        assert brier["Brier hyper (split prior)"] == pytest.approx(
            _metrics(run)["uncertainty"]["probabilities_split_prior"]["hyper"]["brier"])
    report_json = json.loads(out.metrics.read_text())  # the report's metrics.json leaves the block out (size)
    assert "uncertainty" in report_json["omitted_from_runs"]
    assert "uncertainty" not in report_json["runs"]["vanilla"]["metrics"]


def test_decision_curves_use_the_probabilities(report):
    out, runs = report
    for run in runs:
        assert _metrics(run)["figures"]["decision_curves"]["hyper"]["probability"] == "p_hyper"
    page = out.html.read_text()
    caption = page[page.index('id="f-decision_curves"'):]
    caption = caption[:caption.index("</figure>")]
    assert "conformal layer" in caption and "event model" not in caption


def test_tripod_maps_the_section(report):
    out, _ = report
    items = {i["id"]: i for i in json.loads((out.path / tripod.JSON_NAME).read_text())["items"]}
    for item in ("12e", "15", "23a"):
        assert "report.html#uncertainty" in items[item]["locations"]


def test_runs_evaluated_before_keep_the_old_report(report, tmp_path):
    """metrics.json of schema 2 (no uncertainty, event-model curves): no section, the event model's caption."""
    import shutil

    _, runs = report
    old = tmp_path / "old"
    shutil.copytree(runs[0], old)
    rd = RunDir(old)
    metrics = rd.read_metrics("test")
    metrics.pop("uncertainty")
    metrics["figures"].pop("reliability")
    for curve in metrics["figures"]["decision_curves"].values():
        curve.pop("probability"), curve.pop("probability_prevalence")
    metrics["schema_version"] = 2
    rd.metrics_path("test").write_text(json.dumps(metrics))
    out = ReportDir(write_report([old], tmp_path / "rep").parent)
    page = out.html.read_text()
    assert 'id="uncertainty"' not in page and "f-reliability" not in page
    assert "validation-fitted event model" in page and not out.table("interval_coverage").exists()
