"""``ecgka evaluate`` and the conformal layer (issue 23): fitted on val only, stored with the run, its columns in
predictions.parquet and metrics.json ``uncertainty`` equal to a direct computation from those columns."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ecgka.catalog import RunDir
from ecgka.catalog.info import DatasetInfo
from ecgka.evaluation import EvalConfig, compute_metrics, evaluate_run
from ecgka.evaluation.uncertainty import fit_layer, with_columns
from ecgka.keys import PROBABILITY_COLUMNS, SET_COLUMNS, UNCERTAINTY_COLUMNS, interval_columns, set_column
from ecgka.metrics.clinical import CONDITIONS
from ecgka.metrics.conformal import FIT_RULE, layer_from_json
from ecgka.metrics.utility import decision_curve, shift_probability

sys.path.insert(0, str(Path(__file__).parent))
from report_factory import fake_manifest, fake_predictions  # noqa: E402

CLINICAL = {"< 3.0": (-np.inf, 3.0), "3.0 to < 3.5": (3.0, 3.5), "3.5 to < 5.5": (3.5, 5.5),
            "5.5 to < 6.0": (5.5, 6.0), ">= 6.0": (6.0, np.inf)}  # spelt out here, not imported


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> DatasetInfo:
    return DatasetInfo.from_dict(fake_manifest(tmp_path_factory.mktemp("data")))


def _direct(df: pd.DataFrame, dataset: DatasetInfo, level: float) -> dict[str, tuple[int, float, float]]:
    """(n, coverage, mean width) per range, straight from a predictions table (an implementation of its own)."""
    y = df["label"].to_numpy(np.float64)
    lo_c, hi_c = interval_columns(level)
    lo, hi = df[lo_c].to_numpy(np.float64), df[hi_c].to_numpy(np.float64)
    hit, width = (np.round(lo, 6) <= np.round(y, 6)) & (np.round(y, 6) <= np.round(hi, 6)), hi - lo
    shots = dataset.grid.assign_groups(y, dataset.train_bins.array)
    masks = {"all": np.ones(y.size, bool), **{f"{g}-shot": shots == g for g in ("many", "median", "few")},
             **{name: (np.round(y, 6) >= a) & (np.round(y, 6) < b) for name, (a, b) in CLINICAL.items()}}
    return {name: (int(m.sum()), float(hit[m].mean()) if m.any() else None,
                   float(width[m].mean()) if m.any() else None) for name, m in masks.items()}


def _check_against_table(metrics: dict, df: pd.DataFrame, dataset: DatasetInfo) -> None:
    rows = metrics["uncertainty"]["coverage"]
    assert {r["level"] for r in rows} == {0.8, 0.9, 0.95}
    for level in (0.8, 0.9, 0.95):
        direct = _direct(df, dataset, level)
        got = {r["range"]: r for r in rows if r["level"] == level}
        assert list(got) == list(direct)  # all, the shot groups, then the clinical ranges, in order
        for name, (n, cov, width) in direct.items():
            assert got[name]["n"] == n
            if n:
                assert got[name]["coverage"] == pytest.approx(cov, abs=1e-12)
                assert got[name]["mean_width"] == pytest.approx(width, abs=1e-6)  # endpoints rounded to 6 dp
                assert got[name]["ci_lower"] <= got[name]["coverage"] <= got[name]["ci_upper"]
    y = df["label"].to_numpy(np.float64)
    for name, c in CONDITIONS.items():
        p = df[f"p_{name}"].to_numpy(np.float64)
        truth = c.positive(y).astype(float)
        assert metrics["uncertainty"]["probabilities"][name]["brier"] == pytest.approx(np.mean((p - truth) ** 2))


def test_metrics_equal_a_direct_computation_from_the_columns(dataset):
    val, test = fake_predictions(2), fake_predictions(1)
    layer = fit_layer(val, dataset, seed=0)
    test = with_columns(test, layer)
    assert list(test.columns[-len(UNCERTAINTY_COLUMNS) - len(SET_COLUMNS):]) == [*UNCERTAINTY_COLUMNS, *SET_COLUMNS]
    assert all(test[c].dtype == np.float32 for c in UNCERTAINTY_COLUMNS)
    assert (test["k_lo_90"] <= test["k_hi_90"]).all() and (test["k_lo_95"] <= test["k_lo_80"]).all()
    m = compute_metrics(test, val, dataset, EvalConfig(n_boot=10), layer=layer)  # as ecgka evaluate calls it
    _check_against_table(m, test, dataset)
    # the accepted set (whose hull the interval is): its coverage and length, from its list column alone
    labels = np.round(test["label"].to_numpy(np.float64), 6)
    for r in m["uncertainty"]["coverage"]:
        if r["range"] != "all":
            continue
        pieces = test[set_column(r["level"])]
        member = [any(round(p["lo"], 6) <= k and (k < round(p["hi"], 6) or (k == round(p["hi"], 6) and not p["hi_open"]))
                      for p in s) for k, s in zip(labels, pieces, strict=True)]
        assert r["set_coverage"] == pytest.approx(np.mean(member))
        assert r["set_mean_length"] == pytest.approx(np.mean([sum(p["hi"] - p["lo"] for p in s) for s in pieces]))
        lo, hi = interval_columns(r["level"])
        assert [s[0]["lo"] for s in pieces] == test[lo].tolist() and [s[-1]["hi"] for s in pieces] == test[hi].tolist()
    for r in m["uncertainty"]["coverage"]:
        assert r["set_coverage"] <= r["coverage"] + 1e-12 and r["set_mean_length"] <= r["mean_width"] + 1e-5
    assert m["schema_version"] == 3 and m["uncertainty"]["in_sample"] is False
    json.dumps(m, allow_nan=False)
    # the same numbers when compute_metrics fits the layer itself (no columns given): val only, same seed
    again = compute_metrics(test.drop(columns=list(UNCERTAINTY_COLUMNS)), val, dataset, EvalConfig(n_boot=10))
    assert again["uncertainty"]["coverage"] == m["uncertainty"]["coverage"]


def test_the_console_line_gives_coverage_and_width_per_range(dataset, capsys):
    """``ecgka evaluate`` prints the 90 % intervals' coverage and mean width per range, from metrics.json."""
    from ecgka.cli.evaluate import print_coverage

    val, test = fake_predictions(2), fake_predictions(1)
    block = compute_metrics(test, val, dataset, EvalConfig(n_boot=10))["uncertainty"]
    print_coverage(block, "mmol/L")
    line = capsys.readouterr().out.strip()
    rows = [r for r in block["coverage"] if r["level"] == 0.9 and r["n"]]
    assert line.startswith("90% intervals: ") and line.count("mmol/L") == len(rows) > 5
    for r in rows:
        assert (f"{r['range']} {r['coverage']:.2f} ({r['mean_width']:.2f} mmol/L; set {r['set_coverage']:.2f}, "
                f"n={r['n']})") in line
    print_coverage(None, "mmol/L")  # a run evaluated before the layer existed: nothing printed
    assert capsys.readouterr().out == ""


def test_the_layer_sees_val_only(dataset):
    """Test labels never reach the layer: other test labels, the same intervals for the same predictions."""
    val, test = fake_predictions(2), fake_predictions(1)
    other = test.copy()
    other["label"] = np.random.default_rng(5).permutation(other["label"].to_numpy())
    a = compute_metrics(test, val, dataset, EvalConfig(n_boot=10))
    b = compute_metrics(other, val, dataset, EvalConfig(n_boot=10))
    assert a["uncertainty"]["layer"] == b["uncertainty"]["layer"]
    layer = fit_layer(val, dataset)
    cols_a, cols_b = with_columns(test, layer), with_columns(other, layer)
    pd.testing.assert_frame_equal(cols_a[list(UNCERTAINTY_COLUMNS)], cols_b[list(UNCERTAINTY_COLUMNS)])
    shifted = val.copy()
    shifted["prediction"] = shifted["prediction"] + 0.3  # a different val: a different layer
    assert fit_layer(shifted, dataset).model_dump() != layer.model_dump()


def test_val_coverage_is_marked_in_sample(dataset):
    val = fake_predictions(2)
    m = compute_metrics(val, val, dataset, EvalConfig(n_boot=10), split="val")
    assert m["uncertainty"]["in_sample"] is True and m["uncertainty"]["fitted_on"] == "val"


def test_decision_curves_use_the_layer_probabilities(dataset):
    val, test = fake_predictions(2), fake_predictions(1)
    layer = fit_layer(val, dataset)
    test = with_columns(test, layer)
    m = compute_metrics(test, val, dataset, EvalConfig(n_boot=10))
    for name in ("hypo", "hyper"):
        curve = m["figures"]["decision_curves"][name]
        assert curve["probability"] == f"p_{name}"
        cond = m["utility"]["conditions"][name]
        train, declared = m["utility"]["prevalence"]["training"][name], cond["declared_prevalence"]
        assert curve["probability_prevalence"] == pytest.approx(train)
        prob = shift_probability(test[f"p_{name}"].to_numpy(np.float64), train, declared)
        expected = decision_curve(prob, CONDITIONS[name].positive(test["label"]), declared)
        assert curve["model"] == pytest.approx(expected["model"])
    # a user-declared prevalence moves the probabilities by the prior shift (Bayes), not the event model
    m2 = compute_metrics(test, val, dataset, EvalConfig(n_boot=10, deployment_prevalence={"hyper": 0.2}))
    prob = shift_probability(test["p_hyper"].to_numpy(np.float64), m["utility"]["prevalence"]["training"]["hyper"],
                             0.2)
    expected = decision_curve(prob, CONDITIONS["hyper"].positive(test["label"]), 0.2)
    assert m2["figures"]["decision_curves"]["hyper"]["model"] == pytest.approx(expected["model"])


def test_shift_probability_is_bayes():
    p = np.array([0.0, 0.2, 0.5, 1.0])
    out = shift_probability(p, 0.1, 0.3)
    odds = (0.3 / 0.7) / (0.1 / 0.9)
    assert out[0] == 0.0 and out[3] == 1.0
    assert out[1] == pytest.approx(0.2 * odds / (0.2 * odds + 0.8)) and out[2] == pytest.approx(odds / (odds + 1))
    assert shift_probability(p, 0.25, 0.25) == pytest.approx(p)


# ------------------------------------------------------------------ end to end: the real trainer and predict


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A one-epoch run of the small Net1D on the trainer's tiny shard factory dataset."""
    pytest.importorskip("torch")
    from shard_factory import train_tiny

    return train_tiny(tmp_path_factory.mktemp("trained_unc"), n_val=48)


@pytest.mark.slow
def test_evaluate_writes_columns_and_the_layer_then_refits_on_a_new_checkpoint(trained, tmp_path):
    import shutil

    from ecgka.evaluation.evaluate import _describe

    run = tmp_path / "run"
    shutil.copytree(trained[0], run)
    data, rd = trained[1], RunDir(run)
    metrics = evaluate_run(run, data, "test", EvalConfig(n_boot=10, device="cpu"))
    test, val = pd.read_parquet(rd.predictions_path("test")), pd.read_parquet(rd.predictions_path("val"))
    for df in (test, val):
        assert set(UNCERTAINTY_COLUMNS) <= set(df.columns)
        assert ((df[list(PROBABILITY_COLUMNS)] >= 0) & (df[list(PROBABILITY_COLUMNS)] <= 1)).all().all()
    layer = layer_from_json(rd.read_uncertainty())
    sha = metrics["model"]["checkpoint_sha256"]
    assert layer.source["checkpoint_sha256"] == sha and layer.source["split"] == "val"
    assert layer.source["dataset_fingerprint"] == metrics["dataset"]["fingerprint"]
    assert layer.n_calibration == len(val) == metrics["uncertainty"]["layer"]["n_calibration"]
    # fitted on val's predictions: refitting from eval/val/predictions.parquet gives the stored layer
    dataset = _describe(rd, data)
    refit = fit_layer(val, dataset, 0, dict(layer.source))
    assert refit.model_dump() == layer.model_dump()
    _check_against_table(metrics, test, dataset)

    stored = rd.uncertainty.read_bytes()
    evaluate_run(run, data, "test", EvalConfig(n_boot=10, device="cpu"))  # unchanged: reused as it is
    assert rd.uncertainty.read_bytes() == stored
    older = json.loads(stored)  # a layer fitted by an older rule (its merges may differ): refitted, same as now
    older["source"]["fit_rule"] = FIT_RULE - 1
    rd.uncertainty.write_text(json.dumps(older))
    evaluate_run(run, data, "test", EvalConfig(n_boot=10, device="cpu"))
    assert rd.uncertainty.read_bytes() == stored
    last = evaluate_run(run, data, "test", EvalConfig(n_boot=10, device="cpu", checkpoint="last"))
    assert last["uncertainty"]["layer"]["source"]["checkpoint"] == "last"  # other weights: a layer of their own
    assert rd.uncertainty.read_bytes() == stored  # the shipped (best) checkpoint's layer stays

    rd.checkpoint("best").write_bytes(rd.checkpoint("last").read_bytes())  # another checkpoint (its SHA-256)
    again = evaluate_run(run, data, "test", EvalConfig(n_boot=10, device="cpu"))
    new = layer_from_json(rd.read_uncertainty())
    assert again["model"]["checkpoint_sha256"] != sha
    assert new.source["checkpoint_sha256"] == again["model"]["checkpoint_sha256"]

    vals = evaluate_run(run, data, "val", EvalConfig(n_boot=10, device="cpu"))
    assert vals["uncertainty"]["in_sample"] is True

    # another dataset: the stored layer of these weights is applied as shipped, and stays the run's own
    from shard_factory import write_dataset

    stored = rd.uncertainty.read_bytes()
    other = write_dataset(tmp_path / "other", n_train=64, n_val=32, n_test=16, n_samples=250, seed=7)
    theirs = evaluate_run(run, other, "test", EvalConfig(n_boot=10, device="cpu"), allow_other_dataset=True)
    assert rd.uncertainty.read_bytes() == stored
    assert theirs["uncertainty"]["layer"]["source"] == new.source
    fingerprint = theirs["dataset"]["fingerprint"]
    assert set(UNCERTAINTY_COLUMNS) <= set(pd.read_parquet(rd.predictions_path("test", fingerprint)).columns)


def test_accepted_set_columns_read_by_duckdb_polars_and_pandas(dataset, tmp_path):
    """``k_set_<level>`` is a Parquet list of ``{lo, hi}`` structs that DuckDB, Polars and pandas read alike."""
    import duckdb
    import polars as pl

    layer = fit_layer(fake_predictions(2), dataset, seed=0)
    test = with_columns(fake_predictions(1), layer)
    path = tmp_path / "predictions.parquet"
    test.to_parquet(path, index=False)  # as ``ecgka evaluate`` writes it
    pieces = sum(len(s) for s in test["k_set_90"])
    rows = duckdb.sql(f"SELECT sample_id, p.lo, p.hi FROM (SELECT sample_id, unnest(k_set_90) AS p "
                      f"FROM '{path}') ORDER BY sample_id, p.lo").fetchall()
    assert len(rows) == pieces > len(test)
    exploded = pl.read_parquet(path).select("sample_id", "k_set_90").explode("k_set_90").unnest("k_set_90")
    assert sorted(exploded.select("sample_id", "lo", "hi").rows()) == sorted(rows)
    back = pd.read_parquet(path)
    assert [[dict(p) for p in s] for s in back["k_set_90"]] == [[dict(p) for p in s] for s in test["k_set_90"]]
