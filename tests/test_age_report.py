"""``ecgka report`` on face-age runs: the same tables in years, and no potassium clinical section."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from age_factory import ecgka, make_standin, train

from ecgka.catalog import ReportDir

pytestmark = pytest.mark.slow  # end to end: `make test` runs it, `make test-fast` skips it


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> ReportDir:
    root = tmp_path_factory.mktemp("age_report")
    csv = make_standin(root / "standin", n=150)
    train(csv, root / "vanilla", "vanilla")
    train(csv, root / "dist_loss", "dist_loss", init=root / "vanilla")
    for run in ("vanilla", "dist_loss"):
        done = ecgka("evaluate", root / run, "--data", csv, "n_boot=10")
        assert done.returncode == 0, done.stderr[-2000:]
    done = ecgka("report", root / "vanilla", root / "dist_loss", "--out", root / "report")
    assert done.returncode == 0, done.stderr[-2000:]
    return ReportDir(root / "report")


def test_an_age_report_has_no_potassium_clinical_section(report):
    for page in (report.html, report.markdown):
        text = Path(page).read_text()
        for word in ("Hyperkalaemia", "Hypokalaemia", "mmol/L", "Clinical detection", "ECGs"):
            assert word not in text, (page.name, word)
    tables = {p.stem for p in report.table("x").parent.glob("*.csv")}
    assert {"results", "dataset_counts", "shot_regions", "training_time"} <= tables
    assert not tables & {"clinical_thresholds", "clinical_operating_point", "mae_by_range", "bland_altman"}
    figures = {p.stem for p in report.figure("x").parent.glob("*.png")}
    assert "roc" not in figures and "calibration" not in figures and "distributions" in figures


def test_its_results_table_is_in_years(report):
    md = Path(report.markdown).read_text()
    assert "Results by shot region (Tables 1, 8), errors in years" in md
    assert "ranges (years)" in md and "Face-age regression" in md
    results = pd.read_csv(report.table("results"))
    assert results["method"].tolist() == ["Vanilla", "Dist Loss"]
    metrics = json.loads(Path(report.metrics).read_text())
    for run in metrics["runs"].values():
        assert metrics["datasets"][run["dataset_fingerprint"]]["label"]["unit"] == "years"  # once per dataset
        assert results.loc[results["method"] == run["display_name"], "MAE all"].item() == \
            pytest.approx(run["metrics"]["regression"]["all"]["mae"])
