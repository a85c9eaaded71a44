"""The MLflow mirror (docs/training.md, "MLflow mirror"), against local SQLite tracking stores: a training
run's params, per-epoch metrics and tags; a tracking server that fails; the pyfunc export scoring exactly
as ``ecgka predict``; the champion alias set in an MLflow model registry by a promotion."""

from __future__ import annotations

import pytest
import torch
from shard_factory import write_dataset

from ecgka.catalog import RunDir
from ecgka.config import config_hash
from ecgka.training import load_train_config, train_run
from ecgka.training.mlflow_mirror import (
    TAG_RUN_FINGERPRINT,
    TAG_RUN_PATH,
    flatten_params,
    mlflow_client,
)
from ecgka.training.resume import comparable

mlflow = pytest.importorskip("mlflow")

FAST = ["model.preset=tiny", "batch_size=32", "threads=1", "epochs=2", "progress=false", "tensorboard=false"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("ds"), n_train=96, n_val=32, n_test=16, n_samples=256)


def _uri(path) -> str:
    return f"sqlite:///{path}"


def test_params_are_dot_keys_within_mlflows_limits():
    params = flatten_params({"optim": {"lr": 0.001, "milestones": [5, 8]}, "init": {"path": None},
                             "overrides": {}, "note": "x" * 7000, "k" * 300: 1})
    assert params["optim.lr"] == "0.001" and params["optim.milestones"] == "[5, 8]"
    assert params["init.path"] == "None" and params["overrides"] == "{}"
    assert len(params["note"]) == 6000 and "k" * 250 in params


def test_training_logs_config_epochs_and_tags(data_dir, tmp_path):
    uri = _uri(tmp_path / "mlflow.db")
    run = RunDir(tmp_path / "run")
    cfg = load_train_config(None, [*FAST, f"mlflow.tracking_uri={uri}", "mlflow.experiment=mirror", "name=tiny"])
    summary = train_run(cfg, data_dir, run.path)
    client = mlflow_client(uri)
    [found] = client.search_runs([client.get_experiment_by_name("mirror").experiment_id])
    assert found.info.run_name == "tiny" and found.info.status == "FINISHED"
    assert found.data.tags[TAG_RUN_PATH] == str(run.path.resolve())
    assert found.data.tags[TAG_RUN_FINGERPRINT] == config_hash(comparable(cfg))
    params = found.data.params
    assert params["epochs"] == "2" and params["model.preset"] == "tiny" and params["optim.lr"] == "0.001"
    assert params["mlflow.tracking_uri"] == uri
    log = run.read_log()
    history = client.get_metric_history(found.info.run_id, "train/loss")
    assert [m.step for m in history] == [1, 2]  # one value per epoch
    assert [m.value for m in history] == pytest.approx([r["train_loss"] for r in log], rel=1e-12)
    val = client.get_metric_history(found.info.run_id, "val/balanced_mae")
    assert [m.value for m in val] == pytest.approx([r["val"]["balanced_mae"] for r in log], rel=1e-12)
    best = log[summary["best_epoch"] - 1]["val"]
    assert found.data.metrics["best_epoch"] == summary["best_epoch"]
    assert found.data.metrics["best/val/balanced_mae"] == pytest.approx(best["balanced_mae"], rel=1e-12)
    # the same command again: the run is complete, nothing is trained or logged twice
    train_run(cfg, data_dir, run.path)
    assert len(client.search_runs([found.info.experiment_id])) == 1


def test_extending_a_run_logs_only_the_new_epochs(data_dir, tmp_path):
    uri = _uri(tmp_path / "mlflow.db")
    run = tmp_path / "run"
    train_run(load_train_config(None, [*FAST, "epochs=1"]), data_dir, run)  # no mirror yet
    train_run(load_train_config(None, [*FAST, "epochs=2", f"mlflow.tracking_uri={uri}"]), data_dir, run)
    client = mlflow_client(uri)
    [found] = client.search_runs([client.get_experiment_by_name("ecgka").experiment_id])
    history = client.get_metric_history(found.info.run_id, "train/loss")
    assert [m.step for m in history] == [1, 2]  # the epoch trained before the mirror, then the new one
    assert [m.value for m in history] == pytest.approx([r["train_loss"] for r in RunDir(run).read_log()])


@pytest.mark.parametrize("uri", ["http://127.0.0.1:9/", "nosuchscheme://mlflow"])
def test_a_failing_tracking_server_warns_and_training_is_unchanged(data_dir, tmp_path, capfd, uri):
    plain, mirrored = RunDir(tmp_path / "plain"), RunDir(tmp_path / "mirrored")
    train_run(load_train_config(None, FAST), data_dir, plain.path)
    summary = train_run(load_train_config(None, [*FAST, f"mlflow.tracking_uri={uri}"]), data_dir, mirrored.path)
    assert summary["status"] == "complete"
    warnings = [line for line in capfd.readouterr().err.splitlines() if "MLflow mirror off" in line]
    assert len(warnings) == 1, warnings  # one line, once
    a = torch.load(plain.checkpoint("best"), weights_only=True)["model"]
    b = torch.load(mirrored.checkpoint("best"), weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [r["val"] for r in plain.read_log()] == [r["val"] for r in mirrored.read_log()]
