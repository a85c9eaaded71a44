"""``ecgka evaluate``: metrics from prediction tables, and the real trainer's predict on a tiny dataset."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ecgka.catalog import DatasetDir, RunDir
from ecgka.catalog.info import DatasetInfo
from ecgka.cli import main as cli_main
from ecgka.errors import InputError
from ecgka.evaluation import EvalConfig, compute_metrics, evaluate_run
from ecgka.keys import SET_COLUMNS, UNCERTAINTY_COLUMNS
from ecgka.labels import LabelGrid, ShotRule
from ecgka.metrics import shot_metrics_from_counts

sys.path.insert(0, str(Path(__file__).parent))
from report_factory import fake_manifest, fake_predictions  # noqa: E402


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return fake_manifest(tmp_path_factory.mktemp("data"))


def test_compute_metrics_uses_manifest_train_counts(manifest):
    test, val = fake_predictions(1), fake_predictions(2)
    m = compute_metrics(test, val, DatasetInfo.from_dict(manifest), EvalConfig(n_boot=50))
    counts = manifest["train_bin_counts"]["counts"]
    assert m["shots"]["train_bin_counts"]["counts"] == counts and m["shots"]["n_max"] == max(counts)
    assert {k: m["shots"][k] for k in ("rule", "many", "few", "source")} == {
        "rule": "relative", "many": 0.5, "few": 0.15, "source": "manifest"}
    grid = LabelGrid.from_manifest(manifest)
    expected = shot_metrics_from_counts(test["prediction"], test["label"], counts, grid)
    assert m["regression"] == expected
    assert sum(m["shots"]["n_per_group"].values()) == len(test) == m["n"]
    assert m["n_subjects"] == test["subject_id"].nunique()
    assert m["dataset"]["fingerprint"] == manifest["fingerprint"] and "exclusions" in m["dataset"]
    json.dumps(m, allow_nan=False)  # strict JSON: no NaN anywhere


def test_operating_point_comes_from_val_only(manifest):
    test = fake_predictions(1)
    val_a, val_b = fake_predictions(2), fake_predictions(2)
    val_b["prediction"] = val_b["prediction"] + 0.5
    a = compute_metrics(test, val_a, DatasetInfo.from_dict(manifest), EvalConfig(n_boot=20))
    b = compute_metrics(test, val_b, DatasetInfo.from_dict(manifest), EvalConfig(n_boot=20))
    op_a = a["clinical"]["conditions"]["hyper"]["operating_point"]
    op_b = b["clinical"]["conditions"]["hyper"]["operating_point"]
    assert op_b["threshold"] == pytest.approx(op_a["threshold"] + 0.5, abs=1e-6)
    assert a["regression"] == b["regression"] and a["clinical"]["conditions"]["hyper"]["auroc"] == \
        b["clinical"]["conditions"]["hyper"]["auroc"]


def test_absolute_rule_and_bad_predictions(manifest):
    test, val = fake_predictions(1), fake_predictions(2)
    m = compute_metrics(test, val, DatasetInfo.from_dict(manifest), EvalConfig(shot_rule="absolute", n_boot=10))
    assert (m["shots"]["rule"], m["shots"]["many"], m["shots"]["few"]) == ("absolute", 100.0, 20.0)
    assert m["shots"]["source"] == "override" and m["config"]["shot_rule"] == "absolute"
    bad = test.copy()
    bad.loc[3, "prediction"] = np.nan
    with pytest.raises(InputError, match="column prediction has 1 non-finite"):
        compute_metrics(bad, val, DatasetInfo.from_dict(manifest))
    with pytest.raises(InputError, match="missing columns subject_id"):
        compute_metrics(test.drop(columns="subject_id"), val, DatasetInfo.from_dict(manifest))


def test_manifest_shot_rule_is_the_evaluated_rule(tmp_path, manifest):
    """A dataset built with many_shot=0.4 is evaluated on 0.4 groups (it used to be 0.5), unless overridden."""
    custom = fake_manifest(tmp_path / "data", shots=ShotRule(many=0.4))
    assert DatasetDir(tmp_path / "data").read_manifest()["label"]["shots"]["many"] == 0.4
    test, val = fake_predictions(1), fake_predictions(2)
    m = compute_metrics(test, val, DatasetInfo.from_dict(custom), EvalConfig(n_boot=10))
    assert (m["shots"]["many"], m["shots"]["few"], m["shots"]["source"]) == (0.4, 0.15, "manifest")
    grid = LabelGrid.from_manifest(custom)
    assert grid.shots.many == 0.4
    assert m["regression"] == shot_metrics_from_counts(test["prediction"], test["label"],
                                                       custom["train_bin_counts"]["counts"], grid)
    default = compute_metrics(test, val, DatasetInfo.from_dict(manifest), EvalConfig(n_boot=10))
    assert m["shots"]["n_per_group"]["many"] > default["shots"]["n_per_group"]["many"]
    back = compute_metrics(test, val, DatasetInfo.from_dict(custom), EvalConfig(many=0.5, n_boot=10))
    assert (back["shots"]["many"], back["shots"]["few"], back["shots"]["source"]) == (0.5, 0.15, "override")
    assert back["regression"] == default["regression"]  # same train histogram, same 0.5 / 0.15 groups


def test_bad_shot_override_is_a_config_error(manifest):
    from ecgka.errors import ConfigError

    with pytest.raises(ConfigError, match="few"):
        compute_metrics(fake_predictions(1), fake_predictions(2), DatasetInfo.from_dict(manifest),
                        EvalConfig(few=0.9, n_boot=10))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A one-epoch run of the small Net1D on the trainer's tiny shard factory dataset."""
    pytest.importorskip("torch")
    from shard_factory import train_tiny

    return train_tiny(tmp_path_factory.mktemp("trained"), n_val=32)


def test_evaluate_run_with_the_real_predict(trained):
    from ecgka.training import predict

    run_dir, data = trained
    # device=cpu on both sides, so the frames are equal exactly on any machine (the CUDA predictions'
    # agreement with the CPU's, within a tolerance, is tests/test_gpu.py's)
    metrics = evaluate_run(run_dir, data, "test", EvalConfig(n_boot=30, device="cpu"))
    rd = RunDir(run_dir)
    preds = pd.read_parquet(rd.predictions_path("test"))
    subgroups = ["sex", "age", "care_setting", "egfr_stage"]  # carried from the shards (ecgka.data.subgroups)
    added = [*subgroups, *UNCERTAINTY_COLUMNS, *SET_COLUMNS]  # and the conformal layer's columns (ecgka.evaluation.uncertainty)
    assert list(preds.columns) == ["sample_id", "subject_id", "label", "prediction", *added] and len(preds) == 32
    pd.testing.assert_frame_equal(preds.drop(columns=added), predict(run_dir, data, "test", device="cpu"),
                                  check_dtype=False)
    assert len(pd.read_parquet(rd.predictions_path("val"))) == 32
    assert rd.read_metrics("test") == metrics
    manifest = DatasetDir(data).read_manifest()
    assert metrics["shots"]["train_bin_counts"]["counts"] == manifest["train_bin_counts"]["counts"]
    assert metrics["run"]["name"] == "tiny" and metrics["dataset"]["matches_training"] is True
    assert metrics["regression"]["all"]["mae"] == pytest.approx(np.mean(np.abs(preds.prediction - preds.label)))


def test_cli_evaluate(trained, capsys, tmp_path):
    run_dir, data = trained
    assert cli_main(["evaluate", str(run_dir), "n_boot=10", "seed=3", "device=cpu", "--data", str(data)]) == 0
    out = capsys.readouterr().out
    assert "MAE all" in out and "hyper: AUROC" in out
    config = RunDir(run_dir).read_metrics("test")["config"]
    assert (config["seed"], config["device"]) == (3, "cpu")
    assert cli_main(["evaluate", str(run_dir), "device=tpu", "--data", str(data)]) == 2
    assert "device" in capsys.readouterr().err
    assert cli_main(["evaluate", str(run_dir), "--data", str(tmp_path)]) == 2
    assert "manifest.json: not found" in capsys.readouterr().err
    assert cli_main(["evaluate", str(run_dir), "n_bot=10", "--data", str(data)]) == 2
    assert "n_bot" in capsys.readouterr().err


def test_evaluate_on_another_dataset_is_refused_then_kept_apart(trained, capsys, tmp_path):
    """Before: exit 0 and the run's own metrics.json overwritten (only matches_training: false said so)."""
    from shard_factory import write_dataset

    from ecgka.report import write_report

    run_dir, data = trained
    rd = RunDir(run_dir)
    assert cli_main(["evaluate", str(run_dir), "n_boot=10", "device=cpu", "--data", str(data)]) == 0
    own = rd.metrics_path("test").read_bytes()
    other = write_dataset(tmp_path / "other", n_train=64, n_val=32, n_test=16, n_samples=250, seed=7)
    fingerprint = DatasetDir(other).read_manifest()["fingerprint"]
    capsys.readouterr()
    assert cli_main(["evaluate", str(run_dir), "n_boot=10", "device=cpu", "--data", str(other)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not the run's training dataset" in err and "--allow-other-dataset" in err
    assert not rd.eval_dir("test", fingerprint).exists() and rd.metrics_path("test").read_bytes() == own
    assert cli_main(["evaluate", str(run_dir), "n_boot=10", "device=cpu", "--data", str(other),
                     "--allow-other-dataset"]) == 0
    out = capsys.readouterr().out
    assert "not the run's training dataset" in out and str(rd.eval_dir("test", fingerprint)) in out
    assert rd.metrics_path("test").read_bytes() == own  # the run's own evaluation is untouched
    theirs = rd.read_metrics("test", fingerprint)
    assert theirs["n"] == 16 and theirs["dataset"]["matches_training"] is False
    report = write_report([run_dir], tmp_path / "rep", dataset=fingerprint)  # reported on request only
    assert fingerprint in report.read_text()


def _copy_run(trained, tmp_path, status: str | None = None) -> Path:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained[0], run)
    shutil.rmtree(RunDir(run).path / "eval", ignore_errors=True)  # the copy is not evaluated yet
    if status is not None:
        info = json.loads((run / "run.json").read_text())
        (run / "run.json").write_text(json.dumps({**info, "status": status}))
    return run


@pytest.mark.parametrize("status", ["running", "failed", "interrupted"])
def test_evaluate_refuses_an_incomplete_run(trained, tmp_path, capsys, status):
    """Before: exit 0 while `ecgka train` was still running, and the metrics of the epoch-1 model stayed."""
    run = _copy_run(trained, tmp_path, status)
    assert cli_main(["evaluate", str(run), "n_boot=10", "device=cpu", "--data", str(trained[1])]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"is {status}, not complete" in err and "ecgka train" in err
    assert not RunDir(run).eval_dir("test").exists()


def test_report_refuses_metrics_of_a_changed_checkpoint_or_reevaluates(trained, tmp_path, capsys):
    """Before: the report showed the metrics of weights the run no longer held (e.g. evaluated at epoch 1
    while training went on)."""
    run, data = _copy_run(trained, tmp_path), trained[1]
    rd = RunDir(run)
    evaluate_run(run, data, "test", EvalConfig(n_boot=10, device="cpu"))
    sha = rd.read_metrics("test")["model"]["checkpoint_sha256"]
    assert cli_main(["report", str(run), "--out", str(tmp_path / "ok")]) == 0  # unchanged: reported
    rd.checkpoint("best").write_bytes(rd.checkpoint("last").read_bytes())  # training went on
    capsys.readouterr()
    assert cli_main(["report", str(run), "--out", str(tmp_path / "rep")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "checkpoint has changed" in err and "ecgka evaluate" in err
    assert not (tmp_path / "rep").exists()
    assert cli_main(["report", str(run), "--out", str(tmp_path / "rep"), "--reevaluate"]) == 0
    assert "evaluating it again" in capsys.readouterr().out
    metrics = rd.read_metrics("test")
    assert metrics["model"]["checkpoint_sha256"] != sha and metrics["config"]["n_boot"] == 10
    assert (tmp_path / "rep" / "report.html").is_file()
