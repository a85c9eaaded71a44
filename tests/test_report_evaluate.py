"""``ecgka evaluate``: metrics from prediction tables, and the real trainer's predict on a tiny dataset."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ecgka.cli import main as cli_main
from ecgka.errors import InputError
from ecgka.evaluation import EvalConfig, compute_metrics, evaluate_run
from ecgka.metrics import shot_metrics_from_counts

sys.path.insert(0, str(Path(__file__).parent))
from report_factory import fake_manifest, fake_predictions  # noqa: E402


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return fake_manifest(tmp_path_factory.mktemp("data"))


def test_compute_metrics_uses_manifest_train_counts(manifest):
    test, val = fake_predictions(1), fake_predictions(2)
    m = compute_metrics(test, val, manifest, EvalConfig(n_boot=50))
    counts = manifest["train_bin_counts"]["counts"]
    assert m["shots"]["train_bin_counts"]["counts"] == counts and m["shots"]["n_max"] == max(counts)
    expected = shot_metrics_from_counts(test["prediction"], test["label"], counts, lo=1.5, bin_width=0.1)
    assert m["regression"] == expected
    assert sum(m["shots"]["n_per_group"].values()) == len(test) == m["n"]
    assert m["n_subjects"] == test["subject_id"].nunique()
    assert m["dataset"]["fingerprint"] == manifest["fingerprint"] and "exclusions" in m["dataset"]
    json.dumps(m, allow_nan=False)  # strict JSON: no NaN anywhere


def test_operating_point_comes_from_val_only(manifest):
    test = fake_predictions(1)
    val_a, val_b = fake_predictions(2), fake_predictions(2)
    val_b["prediction"] = val_b["prediction"] + 0.5
    a = compute_metrics(test, val_a, manifest, EvalConfig(n_boot=20))
    b = compute_metrics(test, val_b, manifest, EvalConfig(n_boot=20))
    op_a = a["clinical"]["conditions"]["hyper"]["operating_point"]
    op_b = b["clinical"]["conditions"]["hyper"]["operating_point"]
    assert op_b["threshold"] == pytest.approx(op_a["threshold"] + 0.5, abs=1e-6)
    assert a["regression"] == b["regression"] and a["clinical"]["conditions"]["hyper"]["auroc"] == \
        b["clinical"]["conditions"]["hyper"]["auroc"]


def test_absolute_rule_and_bad_predictions(manifest):
    test, val = fake_predictions(1), fake_predictions(2)
    m = compute_metrics(test, val, manifest, EvalConfig(shot_rule="absolute", n_boot=10))
    assert (m["shots"]["many"], m["shots"]["few"]) == (100.0, 20.0)
    bad = test.copy()
    bad.loc[3, "prediction"] = np.nan
    with pytest.raises(InputError, match="column prediction has 1 non-finite"):
        compute_metrics(bad, val, manifest)
    with pytest.raises(InputError, match="missing columns subject_id"):
        compute_metrics(test.drop(columns="subject_id"), val, manifest)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A one-epoch run of the small Net1D on the trainer's tiny shard factory dataset."""
    torch = pytest.importorskip("torch")
    from shard_factory import write_dataset

    from ecgka.training import TrainConfig, train_run

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("trained")
    data = write_dataset(root / "data", n_train=128, n_val=32, n_test=32, n_samples=250)
    cfg = TrainConfig.model_validate({"name": "tiny", "model": {"preset": "small"}, "epochs": 1,
                                      "batch_size": 32, "device": "cpu", "progress": False, "threads": 1})
    train_run(cfg, data, root / "run")
    return root / "run", data


def test_evaluate_run_with_the_real_predict(trained):
    from ecgka.training import predict

    run_dir, data = trained
    metrics = evaluate_run(run_dir, data, "test", EvalConfig(n_boot=30))
    preds = pd.read_parquet(run_dir / "eval" / "test" / "predictions.parquet")
    assert list(preds.columns) == ["sample_id", "subject_id", "label", "prediction"] and len(preds) == 32
    pd.testing.assert_frame_equal(preds, predict(run_dir, data, "test", device="cpu"), check_dtype=False)
    assert len(pd.read_parquet(run_dir / "eval" / "val" / "predictions.parquet")) == 32
    assert json.loads((run_dir / "eval" / "test" / "metrics.json").read_text()) == metrics
    manifest = json.loads((data / "manifest.json").read_text())
    assert metrics["shots"]["train_bin_counts"]["counts"] == manifest["train_bin_counts"]["counts"]
    assert metrics["run"]["name"] == "tiny" and metrics["dataset"]["matches_training"] is True
    assert metrics["regression"]["all"]["mae"] == pytest.approx(np.mean(np.abs(preds.prediction - preds.label)))


def test_cli_evaluate(trained, capsys, tmp_path):
    run_dir, data = trained
    assert cli_main(["evaluate", str(run_dir), "n_boot=10", "seed=3", "--data", str(data)]) == 0
    out = capsys.readouterr().out
    assert "MAE all" in out and "hyper: AUROC" in out
    assert json.loads((run_dir / "eval" / "test" / "metrics.json").read_text())["config"]["seed"] == 3
    assert cli_main(["evaluate", str(run_dir), "--data", str(tmp_path)]) == 2
    assert "manifest.json: dataset manifest not found" in capsys.readouterr().err
    assert cli_main(["evaluate", str(run_dir), "n_bot=10", "--data", str(data)]) == 2
    assert "n_bot" in capsys.readouterr().err
