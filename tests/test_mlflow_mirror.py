"""The MLflow mirror (docs/training.md, "MLflow mirror"), against local SQLite tracking stores: a training
run's params, per-epoch metrics and tags; a tracking server that fails; the pyfunc export scoring exactly
as ``ecgka predict``; the champion alias set in an MLflow model registry by a promotion."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from shard_factory import write_dataset
from standin_factory import built_standin, trained_and_evaluated

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

REPO = Path(__file__).resolve().parents[1]
FAST = ["model.preset=tiny", "batch_size=32", "threads=1", "epochs=2", "progress=false", "tensorboard=false"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("ds"), n_train=96, n_val=32, n_test=16, n_samples=256)


@pytest.fixture(autouse=True)
def _nothing_in_the_working_directory(tmp_path, monkeypatch):
    """MLflow's default store is ./mlflow.db (./mlruns for artifacts): the mirror never falls back to it."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    yield
    assert sorted(p.name for p in cwd.iterdir()) == []


def _uri(path) -> str:
    return f"sqlite:///{path}"


def test_params_are_dot_keys_within_mlflows_limits():
    params = flatten_params({"optim": {"lr": 0.001, "milestones": [5, 8]}, "init": {"path": None},
                             "overrides": {}, "note": "x" * 7000, "k" * 300: 1})
    assert params["optim.lr"] == "0.001" and params["optim.milestones"] == "[5, 8]"
    assert params["init.path"] == "None" and params["overrides"] == "{}"
    assert len(params["note"]) == 6000 and "k" * 250 in params


@pytest.mark.slow  # the SQLite store's first use creates its tables: seconds
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
    # its evaluation lands in the same MLflow run
    from ecgka.evaluation import EvalConfig, evaluate_run

    metrics = evaluate_run(run.path, data_dir, "test", EvalConfig(n_boot=200))
    logged = client.get_run(found.info.run_id).data.metrics
    assert logged["test/regression.all.mae"] == pytest.approx(metrics["regression"]["all"]["mae"], rel=1e-12)
    assert logged["test/n"] == metrics["n"]
    # the same command again: the run is complete, nothing is trained or logged twice
    train_run(cfg, data_dir, run.path)
    assert len(client.search_runs([found.info.experiment_id])) == 1


@pytest.mark.slow  # the SQLite store's first use creates its tables: seconds
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


# ---- the pyfunc export and the champion alias: a dataset made by `ecgka build` (predict reads its signal settings)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A stand-in built into a dataset, two tiny runs on it, each evaluated (operating points)."""
    ecg, data = built_standin(tmp_path_factory.mktemp("built"))
    return ecg, data, [trained_and_evaluated(data, data.parent / f"run{seed}", [f"seed={seed}"]) for seed in (0, 1)]


def _records(ecg_root, n: int = 5):
    import pandas as pd

    return pd.read_csv(ecg_root / "record_list.csv").head(n)[["subject_id", "study_id", "path"]]


@pytest.mark.slow
def test_mlflow_export_predicts_exactly_as_ecgka_predict(built, tmp_path):
    import pandas as pd

    from ecgka.catalog import ExportDir
    from ecgka.cli import main
    from ecgka.release.scoring import predict_ecgs

    ecg_root, _, (run, _) = built
    records = _records(ecg_root)
    (ecg_root / records["path"].iloc[1]).with_suffix(".dat").write_bytes(b"")  # an excluded record among them
    records.to_csv(tmp_path / "list.csv", index=False)
    assert main(["export", str(run), "--format", "mlflow", "--out", str(tmp_path / "export")]) == 0
    export = ExportDir(tmp_path / "export")
    assert export.card_path.is_file() and export.read_card()["format"] == "mlflow"
    model = mlflow.pyfunc.load_model(str(export.mlflow_dir))
    got = model.predict(records, params={"ecg_root": str(ecg_root)})
    assert main(["predict", "--model", str(run), "--ecg-root", str(ecg_root), "--record-list",
                 str(tmp_path / "list.csv"), "--out", str(tmp_path / "scores.parquet")]) == 0
    want = pd.read_parquet(tmp_path / "scores.parquet")
    assert got["excluded_reason"].notna().sum() == 1 and got["potassium_pred"].notna().sum() == len(records) - 1
    pd.testing.assert_frame_equal(got, want, check_exact=True)  # same columns, dtypes and numbers
    pd.testing.assert_frame_equal(got, predict_ecgs(str(run), ecg_root, tmp_path / "again.parquet",
                                                    tmp_path / "list.csv"), check_exact=True)


@pytest.mark.slow
def test_promotion_sets_the_champion_alias_in_the_mlflow_registry(built, tmp_path, monkeypatch):
    from ecgka.release.gate import GateConfig
    from ecgka.release.mlflow_export import TAG_VERSION
    from ecgka.release.promote import promote
    from ecgka.release.registry import ModelRegistry

    ecg_root, data, runs = built
    uri, reg_dir = _uri(tmp_path / "registry.db"), tmp_path / "registry"
    reg = ModelRegistry(reg_dir)
    v1, v2 = reg.register(runs[0]), reg.register(runs[1])
    from ecgka.cli import main

    assert main(["registry", "mlflow", str(reg_dir), "--tracking-uri", uri, "--model-name", "potassium"]) == 0
    assert promote(reg_dir, v1, new_registry=True)["promote"]
    client = mlflow_client(uri)
    first = client.get_model_version_by_alias("potassium", "champion")
    assert first.tags[TAG_VERSION] == v1
    accept = GateConfig(rules=[{"metric": "regression.all.mae", "greater_is_better": False,
                                "min_absolute_change": -10.0}], n_boot=200)
    assert promote(reg_dir, v2, accept, data)["promote"]
    second = client.get_model_version_by_alias("potassium", "champion")
    assert second.tags[TAG_VERSION] == v2 and second.version != first.version  # the alias moved
    assert {v.tags[TAG_VERSION] for v in client.search_model_versions("name = 'potassium'")} == {v1, v2}
    assert main(["registry", "rollback", str(reg_dir), "v1", "--reason", "drift"]) == 0
    assert client.get_model_version_by_alias("potassium", "champion").version == first.version  # no new version
    assert promote(reg_dir, v2, accept, data)["promote"]
    # the registered champion is the pyfunc export: it scores like `ecgka predict REG@champion`
    import pandas as pd

    from ecgka.release.scoring import predict_ecgs

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # how a user's MLflow finds its registry
    served = mlflow.pyfunc.load_model("models:/potassium@champion")
    records = _records(ecg_root, 3)
    records.to_csv(tmp_path / "list.csv", index=False)
    pd.testing.assert_frame_equal(served.predict(records, params={"ecg_root": str(ecg_root)}),
                                  predict_ecgs(f"{reg_dir}@champion", ecg_root, tmp_path / "s.parquet",
                                               tmp_path / "list.csv"), check_exact=True)


def _fingerprints(tmp_path, block: str) -> tuple[list, dict[str, str]]:
    from ecgka.pipeline.runner import _prepare, stage_fingerprint
    from ecgka.pipeline.spec import load_pipeline

    path = tmp_path / "p.yaml"
    path.write_text(block + "stages:\n"
                    "  - {id: base, kind: train, data: ds, overrides: [epochs=1]}\n"
                    "  - {id: plain, kind: train, data: ds}\n"
                    "  - {id: mine, kind: train, data: ds, overrides: [mlflow.run_name=own]}\n")
    spec = load_pipeline(path)
    out, found = tmp_path / "out", {}
    for stage in spec.stages:
        kind, options, raw, _ = _prepare(stage, spec, {}, out, tmp_path)
        found[stage.id] = stage_fingerprint(stage, kind, spec, {}, raw, options, {}, out, tmp_path)
    return spec.stages, found


def test_a_pipelines_mlflow_block_mirrors_its_training_stages_and_changes_no_fingerprint(tmp_path):
    from ecgka.training.config import load_train_config

    stages, mirrored = _fingerprints(tmp_path, "mlflow: {tracking_uri: 'sqlite:///m.db', experiment: retrain}\n")
    base = load_train_config(None, stages[0].options["overrides"])
    assert (base.mlflow.tracking_uri, base.mlflow.experiment, base.mlflow.run_name) == ("sqlite:///m.db", "retrain",
                                                                                        "base")
    assert base.epochs == 1
    assert load_train_config(None, stages[2].options["overrides"]).mlflow.run_name == "own"  # the stage's own wins
    _, plain = _fingerprints(tmp_path, "")
    assert mirrored == plain



def test_without_mlflow_a_configured_mirror_is_one_line_before_anything_is_written(data_dir, tmp_path, monkeypatch):
    import sys

    from ecgka.errors import InputError

    monkeypatch.setitem(sys.modules, "mlflow", None)  # what an environment without the package looks like
    cfg = load_train_config(None, [*FAST, "mlflow.tracking_uri=sqlite:///m.db"])
    with pytest.raises(InputError, match=r"pip install 'ecgka\[mlflow\]'"):
        train_run(cfg, data_dir, tmp_path / "run")
    assert not (tmp_path / "run").exists()
