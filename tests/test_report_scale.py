"""Issue 22: the report at the paper grid's scale (pivoted tables, paper order, sections, folding) and its
guard-rails (too few positives, CI around its estimate, refused options, at-a-glance eligibility)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ecgka.catalog.info import DatasetInfo
from ecgka.config import validate_config
from ecgka.errors import ConfigError
from ecgka.evaluation import EvalConfig, compute_metrics
from ecgka.evaluation.config import MIN_N_BOOT, MIN_N_BOOT_ENV
from ecgka.io import atomic_write_json
from ecgka.metrics.bootstrap import bootstrap_ci
from ecgka.metrics.clinical import MIN_POSITIVES, WeightedAuroc, auroc
from ecgka.report import write_report
from ecgka.report.collect import natural_key

sys.path.insert(0, str(Path(__file__).parent))
from report_factory import fake_manifest, fake_predictions, make_run  # noqa: E402


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """The paper's methods, each without and with Dist Loss, given out of order, plus a batch-size ablation."""
    root = tmp_path_factory.mktemp("scale")
    manifest = fake_manifest(root / "data")
    runs = []
    for i, (method, dist) in enumerate([("conr", True), ("lds", False), ("vanilla", True), ("conr", False),
                                        ("vanilla", False), ("lds", True)]):
        runs.append(make_run(root, f"r{i}", manifest, method=method, dist_loss=dist, shrink=0.6 - 0.3 * dist,
                             seed=i + 1, n_boot=20))
    for i, b in enumerate((256, 16, 64)):
        runs.append(make_run(root, f"b{i}", manifest, dist_loss=True, shrink=0.3, seed=20 + i, n_boot=20,
                             extra={"group": "ablation_batch_size", "ablation": f"B={b}"}))
    out = root / "out"
    return {"root": root, "runs": runs, "out": out, "html": write_report(runs, out).read_text()}


def test_main_rows_follow_the_paper_order(grid):
    results = pd.read_csv(grid["out"] / "tables" / "results.csv")
    assert results["method"].tolist() == ["Vanilla", "Vanilla + Dist Loss", "LDS", "LDS + Dist Loss", "ConR",
                                          "ConR + Dist Loss"]


def test_clinical_table_is_one_row_per_method_and_tidy_stays_long(grid):
    clin = pd.read_csv(grid["out"] / "tables" / "clinical_thresholds.csv")
    assert len(clin) == 6 and "AUROC hyper" in clin.columns and "condition" not in clin.columns
    tidy = pd.read_csv(grid["out"] / "tables" / "tidy" / "clinical_thresholds.csv")
    assert list(tidy.columns[:3]) == ["method", "condition", "definition"] and len(tidy) == 6 * 4 * 9


def test_sections_mirror_the_paper_and_appear_only_with_their_runs(grid):
    html = grid["html"]
    for sid in ("results", "dist-loss", "ablation-batch"):
        assert f'<h2 id="{sid}">' in html
    for sid in ("ablation-loss", "imbalance"):
        assert f'<h2 id="{sid}">' not in html
    batch = pd.read_csv(grid["out"] / "tables" / "ablation_batch_size.csv")
    assert batch["method"].tolist() == ["Vanilla", "B=16", "B=64", "B=256"]  # natural order, baseline first


def test_best_is_marked_without_red(grid):
    html = grid["html"]
    css = re.search(r"td\.best\{([^}]*)\}", html).group(1)
    assert "color:#b00" not in css and "red" not in css and "font-weight:bold" in css
    assert 'class="best' in html


def test_natural_sort():
    names = [f"Method {i}" for i in (1, 10, 11, 2, 3)]
    assert sorted(names, key=natural_key) == ["Method 1", "Method 2", "Method 3", "Method 10", "Method 11"]


def test_unknown_methods_sort_naturally_and_long_tables_fold(tmp_path):
    manifest = fake_manifest(tmp_path / "data")
    runs = [make_run(tmp_path, f"m{i}", manifest, method=f"Method {i}", seed=i, n_boot=20,
                     epoch_seconds=(1.0,)) for i in (1, 10, 11, 2, 12, 13, 14, 15, 16, 3, 4, 5, 6, 7, 8, 9)]
    html = write_report(runs, tmp_path / "out").read_text()
    results = pd.read_csv(tmp_path / "out" / "tables" / "results.csv")
    assert results["method"].tolist() == [f"Method {i}" for i in range(1, 17)]
    assert '<details id="t-results"><summary>' in html  # 16 rows > 15: folded under its title


def test_ci_contains_its_estimate_even_with_one_replicate():
    rng = np.random.default_rng(0)
    truth = rng.random(300) < 0.3
    score = truth * 0.5 + rng.normal(0, 1, 300)
    subjects = np.arange(300) // 3
    est = auroc(score, truth)
    for n_boot in (1, 2, 5, 200):
        ci = bootstrap_ci(WeightedAuroc(score, truth), subjects, n_boot=n_boot, seed=3, estimate=est)
        assert ci["lower"] <= est <= ci["upper"], (n_boot, ci)


def test_evaluate_refuses_few_replicates_and_a_bad_sensitivity(monkeypatch):
    monkeypatch.delenv(MIN_N_BOOT_ENV, raising=False)
    assert MIN_N_BOOT == 200
    with pytest.raises(ConfigError, match="n_boot must be at least 200") as err:
        validate_config(EvalConfig, {"n_boot": 1}, "evaluate")
    assert "\n" not in str(err.value)
    assert validate_config(EvalConfig, {"n_boot": 200}, "evaluate").n_boot == 200
    for bad in (0, -0.1, 1.5):
        with pytest.raises(ConfigError, match="target_sensitivity"):
            validate_config(EvalConfig, {"target_sensitivity": bad}, "evaluate")
    assert validate_config(EvalConfig, {"target_sensitivity": 1.0}, "evaluate").target_sensitivity == 1.0


def _one_run(tmp_path, name, metrics, method="vanilla", **run) -> Path:
    d = tmp_path / name
    (d / "eval" / "test").mkdir(parents=True)
    (d / "run.json").write_text(json.dumps({"name": name, "method": method, **run}))
    atomic_write_json(d / "eval" / "test" / "metrics.json", metrics)
    return d


def test_too_few_positives_broken_model_and_empty_hyper_set_are_stated(tmp_path):
    manifest = fake_manifest(tmp_path / "data")
    ds = DatasetInfo.from_dict(manifest)
    good = fake_predictions(1, shrink=0.3)
    keep = good["label"] < 5.5  # no hyperkalaemia case at all, one severe hypo case
    low = good[good["label"] < 2.5]
    good = pd.concat([good[keep & (good["label"] >= 2.5)], low.iloc[:1]]).reset_index(drop=True)
    broken = good.assign(prediction=(8.4 - good["label"]).astype(np.float32))  # a sign flip: AUROC < 0.5
    cfg = EvalConfig(n_boot=200)
    m_good = compute_metrics(good, good, ds, cfg)
    m_broken = compute_metrics(broken, broken, ds, cfg)
    sev = m_good["clinical"]["conditions"]["severe_hypo"]
    assert sev["n_positive"] == 1 and sev["too_few"] and sev["min_positives"] == MIN_POSITIVES
    assert m_broken["clinical"]["conditions"]["hypo"]["auroc"] < 0.5
    runs = [_one_run(tmp_path, "good", m_good), _one_run(tmp_path, "broken", m_broken, method="lds")]
    html = write_report(runs, tmp_path / "out").read_text()
    alert = re.search(r'<div class="alert" id="warnings">(.*?)</div>', html, re.S).group(1)
    assert "LDS: hypokalaemia AUROC" in alert and "below 0.5" in alert
    assert "no hyperkalaemia case" in alert and "severe hypokalaemia" in alert
    glance = re.search(r'<h2 id="glance">(.*?)</div>\s*<h2', html, re.S).group(1)
    assert "LDS" not in glance  # never named best
    assert "too few" in html
    md = (tmp_path / "out" / "report.md").read_text()
    assert "no hyperkalaemia case" in md


def test_shot_regions_follow_an_evaluate_override(tmp_path):
    manifest = fake_manifest(tmp_path / "data")
    ds = DatasetInfo.from_dict(manifest)
    test = fake_predictions(1)
    metrics = compute_metrics(test, test, ds, EvalConfig(few=0, n_boot=200))
    assert metrics["regression"]["few"]["n"] == 0
    write_report([_one_run(tmp_path, "r", metrics)], tmp_path / "out")
    regions = pd.read_csv(tmp_path / "out" / "tables" / "shot_regions.csv").set_index("region")
    assert regions.loc["few", "bins"] == 0  # as the results: no few-shot region
    tidy = pd.read_csv(tmp_path / "out" / "tables" / "tidy" / "shot_regions.csv")
    assert "few" not in set(tidy["shot_group"])


def test_report_stays_small_at_scale(grid):
    """Issue 22 (bench_report.py: 104 runs under 3 MB): the decision curves stay in each run's metrics.json
    (under figures), not the report's; figures are 256-colour PNGs, each embedded once."""
    from PIL import Image

    report = json.loads((grid["out"] / "metrics.json").read_text())
    for name, run in report["runs"].items():
        assert "figures" not in run["metrics"]
        assert all("decision_curve" not in c for c in run["metrics"]["utility"]["conditions"].values())
        own = json.loads((grid["root"] / name / "eval" / "test" / "metrics.json").read_text())
        assert set(own["figures"]["decision_curves"]) == {"hypo", "hyper"}
    pngs = sorted((grid["out"] / "figures").glob("*.png"))
    assert pngs and all(Image.open(p).mode == "P" for p in pngs)
    assert grid["html"].count("data:image/png;base64,") == len(pngs)
