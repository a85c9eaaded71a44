"""Deployment prevalence, decision curves, calibration line, per-range MAE and the TRIPOD+AI appendix."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ecgka.metrics.calibration import calibration_fit, calibration_line, mae_by_clinical_range
from ecgka.metrics.clinical import CONDITIONS
from ecgka.metrics.utility import (
    bayes_ppv_npv,
    decision_curve,
    event_probability,
    fit_event_model,
    net_benefit,
    ppv_npv_at_prevalences,
    shift_to_prevalence,
    treat_all,
)
from ecgka.report import tripod

sys.path.insert(0, str(Path(__file__).parent))
from report_factory import fake_manifest, make_run  # noqa: E402


def test_bayes_ppv_npv_hand_values():
    # sens 0.9, spec 0.8, prevalence 0.05: PPV = .045 / (.045 + .19) ; NPV = .76 / (.76 + .005)
    ppv, npv = bayes_ppv_npv(0.9, 0.8, 0.05)
    assert ppv == pytest.approx(0.045 / 0.235)
    assert npv == pytest.approx(0.76 / 0.765)
    ppv, npv = bayes_ppv_npv(0.5, 0.5, 0.5)
    assert ppv == pytest.approx(0.5) and npv == pytest.approx(0.5)


def test_ppv_npv_ci_contains_estimate():
    rng = np.random.default_rng(0)
    truth = rng.random(300) < 0.4
    predicted = np.where(rng.random(300) < 0.85, truth, ~truth)
    subjects = rng.integers(0, 100, 300)
    rows = ppv_npv_at_prevalences(predicted, truth, subjects, [0.01, 0.2], n_boot=200)
    for r in rows:
        assert r["ppv_ci"]["lower"] <= r["ppv"] <= r["ppv_ci"]["upper"]
        assert r["npv_ci"]["lower"] <= r["npv"] <= r["npv_ci"]["upper"]
        ppv, npv = bayes_ppv_npv(r["sensitivity"], r["specificity"], r["prevalence"])
        assert r["ppv"] == pytest.approx(float(ppv))
    assert rows[0]["ppv"] < rows[1]["ppv"]  # rarer condition, lower PPV


def test_net_benefit_hand_and_dcurves():
    prob = np.array([0.9, 0.7, 0.4, 0.3, 0.2, 0.1])
    truth = np.array([1, 1, 0, 1, 0, 0], dtype=bool)
    # t = 0.25: treated 0.9, 0.7, 0.4, 0.3 -> TP 3, FP 1, n 6: 3/6 - 1/6 * (0.25 / 0.75)
    assert net_benefit(prob, truth, [0.25])[0] == pytest.approx(3 / 6 - 1 / 6 / 3)
    t = [0.1, 0.25, 0.5]
    # at another prevalence: sens p - (1 - spec)(1 - p) t / (1 - t)
    assert net_benefit(prob, truth, [0.25], prevalence=0.1)[0] == pytest.approx(1.0 * 0.1 - (1 / 3) * 0.9 / 3)
    for p in (None, 0.1):
        ours = net_benefit(prob, truth, t, prevalence=p)
        theirs = decision_curve(prob, truth, truth.mean() if p is None else p, t)
        assert np.allclose(ours, theirs["model"])
        assert np.allclose(treat_all(truth.mean() if p is None else p, t), theirs["treat_all"])
        assert np.allclose(theirs["treat_none"], 0)


def test_event_model_and_prevalence_shift():
    rng = np.random.default_rng(1)
    k = rng.uniform(2, 7, 2000)
    truth = CONDITIONS["hypo"].positive(k + rng.normal(0, 0.3, k.size))
    m = fit_event_model(k, truth)
    assert m["slope"] < 0  # lower K, more hypokalaemia
    p = event_probability(m, k)
    assert p.mean() == pytest.approx(truth.mean(), abs=1e-6)  # logistic MLE matches the mean
    s = shift_to_prevalence(m, 0.01)
    assert event_probability(s, k).mean() < p.mean()
    assert fit_event_model(k, np.zeros(k.size, bool)) is None


def test_calibration_line_matches_polyfit_and_ci():
    rng = np.random.default_rng(2)
    labels = rng.uniform(2, 7, 400)
    preds = labels + 0.5 * (4.2 - labels) + rng.normal(0, 0.3, 400)
    slope, intercept = np.polyfit(preds, labels, 1)
    a, b = calibration_line(preds, labels)
    assert a == pytest.approx(intercept) and b == pytest.approx(slope)
    assert b > 1  # squeezed toward the mean
    fit = calibration_fit(preds, labels, rng.integers(0, 120, 400), n_boot=200)
    assert fit["slope_ci"]["lower"] <= fit["slope"] <= fit["slope_ci"]["upper"]
    assert fit["intercept_ci"]["lower"] <= fit["intercept"] <= fit["intercept_ci"]["upper"]
    assert calibration_line([1.0], [2.0]) is None


def test_mae_by_clinical_range():
    labels = np.array([2.9, 3.0, 3.4, 4.0, 5.5, 5.9, 6.0, 7.0])
    preds = labels + np.array([1, -1, 0.5, 0.2, 0.1, -0.3, 1, 2.0])
    rows = mae_by_clinical_range(preds, labels, np.arange(8), n_boot=200)
    assert [r["range"] for r in rows] == ["< 3.0", "3.0 to < 3.5", "3.5 to < 5.5", "5.5 to < 6.0", ">= 6.0"]
    assert [r["n"] for r in rows] == [1, 2, 1, 2, 2]
    assert rows[1]["mae"] == pytest.approx(0.75) and rows[4]["mae"] == pytest.approx(1.5)
    for r in rows:
        assert r["mae_ci"]["lower"] <= r["mae"] <= r["mae_ci"]["upper"]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    from ecgka.report import write_report

    root = tmp_path_factory.mktemp("util")
    m = fake_manifest(root / "data")
    runs = [make_run(root, "vanilla", m), make_run(root, "dist", m, dist_loss=True, shrink=0.2, seed=2)]
    return write_report(runs, root / "report").parent, runs


def test_metrics_json_has_utility_and_calibration(report):
    _, runs = report
    metrics = json.loads((runs[0] / "eval" / "test" / "metrics.json").read_text())
    hypo = metrics["utility"]["conditions"]["hypo"]
    assert hypo["event_model"]["fitted_on"] == "val"
    assert 0 < hypo["declared_prevalence"] < 0.5  # the training split's, not the balanced test's
    # the curve is figure data: in the run's own metrics.json, left out of the report's (issue 22: size)
    assert "decision_curve" not in hypo and metrics["figures"]["decision_curves"]["hypo"]["source"] == "dcurves.dca"
    assert metrics["utility"]["prevalence"]["source"] == "training" and hypo["prevalence_source"] == "training"
    assert metrics["utility"]["prevalence"]["training"]["hypo"] == hypo["declared_prevalence"]
    assert {r["prevalence"] for r in hypo["ppv_npv"]} >= {0.01, 0.05, 0.2}
    assert set(metrics["calibration_fit"]) >= {"all", "many", "median", "few", "mae_by_range"}


def test_sections_in_report(report):
    folder, _ = report
    page = (folder / "report.html").read_text()
    for sid in ("utility", "calibration-fit"):
        assert f'id="{sid}"' in page
    for name in ("deployment_ppv_npv", "calibration_fit", "mae_by_clinical_range", "event_model"):
        assert f"t-{name}" in page
        assert (folder / "tables" / f"{name}.csv").is_file() or any(folder.rglob(f"{name}.csv"))
    assert "f-decision_curves" in page
    assert "slope above 1" in page
    df = pd.read_csv(next(folder.rglob("calibration_fit.csv")))
    assert set(df["shot region"]) == {"all", "many", "median", "few"}


def test_tripod_appendix(report):
    folder, _ = report
    data = json.loads((folder / tripod.JSON_NAME).read_text())
    items = {i["id"]: i for i in data["items"]}
    assert items["12e"]["filled"] and "report.html#utility" in items["12e"]["locations"]
    assert items["11"]["locations"] == ["report.html#dataset"]
    assert not items["17"]["filled"] and items["17"]["note"]
    assert all(loc.startswith("report.html#") for i in data["items"] for loc in i["locations"])
    assert data["n_filled"] + data["n_to_write"] == len(tripod.ITEMS)
    assert "TRIPOD+AI appendix" in (folder / tripod.HTML_NAME).read_text()
    assert f'<a href="{tripod.HTML_NAME}">TRIPOD+AI appendix</a>' in (folder / "report.html").read_text()


def test_report_of_a_comparison_folder(tmp_path):
    from ecgka.catalog import ComparisonDir
    from ecgka.report import write_report

    comp = ComparisonDir(tmp_path / "compare")
    comp.path.mkdir()
    rows = [{"dataset": "data/v2", "fingerprint": "fp2", "split": "test", "metric": "regression.few.mae",
             "higher_is_better": False, "champion": 0.8, "challenger": 0.7, "delta": -0.1,
             "delta_ci_lower": -0.15, "delta_ci_upper": -0.05}]
    gate = {"promote": True, "failed": [], "rules": [
        {"metric": "regression.few.mae", "champion": 0.8, "challenger": 0.7, "change": -0.1, "gain": 0.1,
         "relative_gain": 0.125, "ci": {"lower": 0.05, "upper": 0.15, "level": 0.95}, "n": 120, "passed": True,
         "reasons": []}]}
    comp.json.write_text(json.dumps({"champion": "v1", "challenger": "v2", "datasets": ["data/v2"], "rows": rows,
                                     "lineage": ["data/v2: fp2 (parent fp1)", "data/v1: fp1"], "gate": gate}))
    page = write_report([comp.path], tmp_path / "report")
    text = page.read_text()
    assert "Champion vs challenger" in text and "MAE few" in text and "-0.100" in text
    assert "Gate decision: promote" in text and "data/v1: fp1" in text and "0.125" in text
    table = pd.read_csv(tmp_path / "report" / "tables" / "comparison_1.csv")
    assert list(table.columns) == ["metric", "better", "n", "champion", "challenger", "delta", "CI lower",
                                   "CI upper"]
    assert (tmp_path / "report" / "tables" / "gate_rules.csv").is_file()
    assert write_report([comp.path], tmp_path / "report") == page  # regenerated freely


def test_declared_deployment_prevalence_changes_ppv_as_bayes_says(tmp_path):
    from report_factory import fake_predictions

    from ecgka.catalog.info import DatasetInfo
    from ecgka.config import load_config
    from ecgka.evaluation import EvalConfig, compute_metrics

    m = fake_manifest(tmp_path / "data")
    test, val = fake_predictions(1, shrink=0.1, noise=0.8), fake_predictions(101, shrink=0.1, noise=0.8)
    cfg = load_config(EvalConfig, overrides=["deployment_prevalence.hyper=0.02", "n_boot=200"])
    ours = compute_metrics(test, val, DatasetInfo.from_dict(m), cfg)["utility"]
    base = compute_metrics(test, val, DatasetInfo.from_dict(m), EvalConfig(n_boot=200))["utility"]
    assert ours["prevalence"]["source"] == "declared" and base["prevalence"]["source"] == "training"
    assert ours["prevalence"]["by_condition"] == {"hypo": "training", "hyper": "declared"}
    hyper, hypo = ours["conditions"]["hyper"], ours["conditions"]["hypo"]
    assert hyper["declared_prevalence"] == 0.02 and hyper["prevalence_source"] == "declared"
    assert hypo["declared_prevalence"] == base["conditions"]["hypo"]["declared_prevalence"]  # left at training's
    row = next(r for r in hyper["ppv_npv"] if r["declared"] and r["point"] == "clinical threshold")
    ppv, npv = bayes_ppv_npv(row["sensitivity"], row["specificity"], 0.02)
    assert row["prevalence"] == 0.02 and row["ppv"] == pytest.approx(float(ppv)) and row["npv"] == pytest.approx(float(npv))
    old = next(r for r in base["conditions"]["hyper"]["ppv_npv"] if r["declared"] and r["point"] == "clinical threshold")
    assert (row["sensitivity"], row["specificity"]) == (old["sensitivity"], old["specificity"])
    assert 0 < row["specificity"] < 1 and row["ppv"] != pytest.approx(old["ppv"])  # same accuracy, another clinic
    assert {r["prevalence"] for r in hyper["ppv_npv"]} >= {0.01, 0.05, 0.2}  # the fixed rows stay


@pytest.mark.parametrize("override", ["deployment_prevalence.hyper=1.5", "deployment_prevalence.hypo=0",
                                      "deployment_prevalence.kalaemia=0.1"])
def test_deployment_prevalence_out_of_range_is_refused(override):
    from ecgka.config import load_config
    from ecgka.errors import ConfigError
    from ecgka.evaluation import EvalConfig

    with pytest.raises(ConfigError) as err:
        load_config(EvalConfig, overrides=[override])
    assert len(str(err.value).splitlines()) == 1 and "deployment_prevalence" in str(err.value)


def test_evaluate_cli_refuses_a_bad_deployment_prevalence_in_one_line(tmp_path, capsys):
    from ecgka.cli import main as cli_main

    assert cli_main(["evaluate", str(tmp_path), "deployment_prevalence.hyper=1", "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "deployment_prevalence" in err and "(0, 1)" in err
