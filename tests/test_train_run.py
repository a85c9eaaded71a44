"""Training runs end to end on a tiny contract-conformant dataset: loader, run dir, predict, two-stage, CLI."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from shard_factory import write_dataset

from ecgka.catalog import DatasetDir
from ecgka.errors import ConfigError, InputError
from ecgka.models import create_model
from ecgka.training import load_train_config, predict, train_run
from ecgka.training.shard_loading import load_split, read_batch, zscore
from ecgka.training.two_stage import frozen_backbone_eval

pytestmark = pytest.mark.slow  # end to end: `make test` runs it, `make test-fast` skips it

REPO = Path(__file__).resolve().parents[1]
FAST = ["model.preset=tiny", "batch_size=32", "progress=false", "threads=1"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("ds"), n_train=160, n_val=48, n_test=32, n_samples=300,
                         leads=("I", "II"), shard_rows=50)


@pytest.fixture(scope="module")
def stage1(data_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "vanilla"
    train_run(load_train_config(None, [*FAST, "epochs=3", "name=vanilla"]), data_dir, run)
    return run


def test_loader_reads_the_shards_exactly(data_dir):
    data = load_split(data_dir, "train")
    table = pq.read_table(DatasetDir(data_dir).shards("train")[1])  # rows 50..99
    raw = np.asarray(table.column("signal").combine_chunks().values.to_numpy(zero_copy_only=False))
    raw = raw.reshape(len(table), 2, 300).astype(np.float32)
    x, y = read_batch(data, np.array([57, 50, 99]), [0, 1])
    np.testing.assert_array_equal(y, table.column("potassium").to_numpy()[[0, 7, 49]])
    np.testing.assert_allclose(x, zscore(raw[[0, 7, 49]]), rtol=1e-6, atol=1e-6)
    assert np.allclose(x.mean(-1), 0, atol=1e-4) and np.allclose(x.std(-1), 1, atol=1e-3)
    x1, _ = read_batch(data, np.array([50]), [1])
    np.testing.assert_allclose(x1, x[:1, 1:], atol=1e-6)
    cache = list((data_dir / ".cache").glob("train-*.npy"))
    assert len(cache) == 1 and Path(load_split(data_dir, "train").signals.filename) == cache[0]


def test_run_directory_layout(stage1, data_dir):
    info = json.loads((stage1 / "run.json").read_text())
    assert info["status"] == "complete" and info["stage"] == 1 and info["method"] == "vanilla"
    assert info["dist_loss"] is False and info["display_name"] == "Vanilla" and info["init"] is None
    assert info["dataset_fingerprint"] == json.loads((data_dir / "manifest.json").read_text())["fingerprint"]
    log = [json.loads(line) for line in (stage1 / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [0, 1, 2]
    assert {"lr", "train_loss", "train_terms", "seconds", "samples_per_s", "val"} <= set(log[0])
    assert {"mae", "balanced_mae"} <= set(log[0]["val"])
    best = min(log, key=lambda r: r["val"]["balanced_mae"])["epoch"]
    assert info["best_epoch"] == best + 1, "run.json counts epochs from 1 (log.jsonl's epoch is the 0-based index)"
    for name in ("best", "last"):
        state = torch.load(stage1 / "checkpoints" / f"{name}.pt", weights_only=True)
        assert "model" in state
    assert (stage1 / "config.yaml").is_file()


def test_predict_matches_validation_metric(stage1, data_dir):
    df = predict(stage1, data_dir, "val", checkpoint="best", device="cpu")
    assert list(df.columns) == ["sample_id", "subject_id", "label", "prediction"]
    assert len(df) == 48 and df["sample_id"].is_unique
    log = [json.loads(line) for line in (stage1 / "log.jsonl").read_text().splitlines()]
    best = json.loads((stage1 / "run.json").read_text())["best_epoch"] - 1  # counted from 1
    mae = float(np.abs(df["prediction"] - df["label"]).mean())
    assert mae == pytest.approx(log[best]["val"]["mae"], rel=1e-5)


def test_complete_run_is_skipped_and_a_changed_config_refused(stage1, data_dir):
    before = (stage1 / "checkpoints" / "last.pt").stat().st_mtime_ns
    train_run(load_train_config(None, [*FAST, "epochs=3", "name=vanilla"]), data_dir, stage1)
    assert (stage1 / "checkpoints" / "last.pt").stat().st_mtime_ns == before
    with pytest.raises(ConfigError, match=r"different config \(differs in seed\); pass --force"):
        train_run(load_train_config(None, [*FAST, "epochs=3", "name=vanilla", "seed=1"]), data_dir, stage1)
    with pytest.raises(ConfigError, match="cannot be shortened"):
        train_run(load_train_config(None, [*FAST, "epochs=2", "name=vanilla"]), data_dir, stage1)


def test_two_stage_trains_only_the_head(stage1, data_dir, tmp_path):
    # the released behaviour (train-mode backbone, no BatchNorm re-estimation): statistics drift in stage 2
    # while the weights are frozen
    cfg = load_train_config(REPO / "configs/train/dist_loss.yaml",
                            [*FAST, "epochs=2", "recalibrate_bn=false", "init.backbone=train"])
    run = tmp_path / "dist"
    info = train_run(cfg, data_dir, run, init=stage1)
    assert info["stage"] == 2 and info["display_name"] == "Dist Loss" and info["init"] == str(stage1)
    assert info["trainable_parameters"] == 1 * 16 + 1
    parent = torch.load(stage1 / "checkpoints/best.pt", weights_only=True)["model"]
    child = torch.load(run / "checkpoints/last.pt", weights_only=True)["model"]
    for key, value in parent.items():
        if key.startswith("head."):
            assert not torch.equal(value, child[key]), key
        elif key.endswith(("running_mean", "running_var", "num_batches_tracked")):
            continue  # train() mode as released: BatchNorm statistics keep updating in stage 2
        else:
            assert torch.equal(value, child[key]), f"{key} changed although frozen"
    assert any(not torch.equal(parent[k], child[k]) for k in parent if k.endswith("running_mean"))


def test_two_stage_eval_backbone_keeps_every_backbone_tensor(stage1, data_dir, tmp_path):
    """Default stage 2: the frozen backbone runs in eval mode, so only the head changes (BatchNorm
    statistics included, and no re-estimation touches them)."""
    cfg = load_train_config(REPO / "configs/train/dist_loss.yaml", [*FAST, "epochs=2"])
    assert cfg.recalibrate_bn and cfg.init.backbone == "eval"
    run = tmp_path / "dist_eval"
    train_run(cfg, data_dir, run, init=stage1)
    parent = torch.load(stage1 / "checkpoints/best.pt", weights_only=True)["model"]
    child = torch.load(run / "checkpoints/last.pt", weights_only=True)["model"]
    changed = {key for key in parent if not torch.equal(parent[key], child[key])}
    assert changed == {"head.weight", "head.bias"}


def test_frozen_backbone_eval_turns_dropout_and_batchnorm_off():
    model = create_model("net1d", preset="tiny")
    model.train()
    frozen_backbone_eval(model)
    backbone = [m for m in model.modules() if m is not model.head]
    assert any(isinstance(m, torch.nn.Dropout) for m in backbone)
    assert not any(m.training for m in backbone) and model.head.training
    x = torch.randn(4, 1, 500)
    torch.testing.assert_close(model.forward_features(x), model.forward_features(x))  # deterministic


def test_loader_rejects_a_directory_without_manifest(tmp_path):
    with pytest.raises(InputError, match="manifest.json"):
        load_split(tmp_path, "train")


def _cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "ecgka", "train", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


def test_cli_unknown_method_is_a_one_line_error(data_dir, tmp_path):
    res = _cli("--data", str(data_dir), "--out", str(tmp_path / "r"), "method.name=dist_los")
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and "Traceback" not in res.stderr
    assert "unknown loss method 'dist_los'" in res.stderr and "dist_loss" in res.stderr and "vanilla" in res.stderr
    assert not (tmp_path / "r").exists()


def test_cli_unknown_model_preset_is_a_one_line_error(data_dir, tmp_path):
    res = _cli("--data", str(data_dir), "--out", str(tmp_path / "r"), "model.preset=huge")
    assert res.returncode == 2 and "valid: ecg, large, small, tiny" in res.stderr
    assert "Traceback" not in res.stderr


def test_every_shipped_config_validates():
    files = sorted((REPO / "configs/train").glob("*.yaml"))
    assert len(files) >= 20
    for path in files:
        load_train_config(path)


def test_extends_merges_and_overrides_win(tmp_path):
    (tmp_path / "base.yaml").write_text("epochs: 3\noptim: {lr: 0.01, milestones: [1]}\n")
    (tmp_path / "child.yaml").write_text("extends: base.yaml\noptim: {lr: 0.5}\n")
    cfg = load_train_config(tmp_path / "child.yaml", ["epochs=7"])
    assert (cfg.epochs, cfg.optim.lr, cfg.optim.milestones) == (7, 0.5, [1])
    (tmp_path / "loop.yaml").write_text("extends: loop.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_train_config(tmp_path / "loop.yaml")


def test_predict_is_the_one_function_of_ecgka_training(stage1, data_dir):
    import ecgka.training
    from ecgka.training.prediction import predict

    assert ecgka.training.predict is predict
    assert len(predict(stage1, data_dir, "test", checkpoint="last", device="cpu")) == 32


def test_device_zscore_matches_the_numpy_one(data_dir):
    from ecgka.training.loader import epoch_batches, iterate_batches, to_device
    from ecgka.training.sources import EcgSplit

    data = load_split(data_dir, "val")
    batches = epoch_batches(len(data), 16, seed=0, epoch=0)
    (x16, y), = list(iterate_batches(EcgSplit(data, [0, 1]), batches[:1]))
    assert x16.dtype == torch.float16
    x, y2 = to_device(x16, y, torch.device("cpu"))
    ref, ref_y = read_batch(data, batches[0], [0, 1], normalise=True)
    np.testing.assert_allclose(x.numpy(), ref, atol=2e-5)
    np.testing.assert_array_equal(y2.numpy(), ref_y)


def test_apply_init_modes(stage1):
    from ecgka.training.build import build_model
    from ecgka.training.two_stage import apply_init

    cfg = load_train_config(None, FAST)
    parent = torch.load(stage1 / "checkpoints/best.pt", weights_only=True)["model"]
    full = build_model(cfg, 2)
    apply_init(full, stage1, "full")
    assert all(torch.equal(v, parent[k]) for k, v in full.state_dict().items())
    trainable = {n for n, p in full.named_parameters() if p.requires_grad}
    assert "head.weight" in trainable and "stem.0.conv.weight" in trainable
    head = build_model(cfg, 2)
    apply_init(head, stage1, "head")
    assert {n for n, p in head.named_parameters() if p.requires_grad} == {"head.weight", "head.bias"}
    assert not torch.equal(head.head.weight, parent["head.weight"])
    assert all(torch.equal(v, parent[k]) for k, v in head.state_dict().items() if not k.startswith("head."))
    with pytest.raises(InputError, match="do not fit"):
        apply_init(build_model(load_train_config(None, [*FAST, "model.preset=ecg"]), 2), stage1, "head")


def test_cuda_only_options_are_ignored_on_the_cpu(data_dir, tmp_path):
    runs = {}
    for name, extra in {"plain": [], "flags": ["bf16=true", "compile=true"]}.items():
        runs[name] = tmp_path / name
        info = train_run(load_train_config(None, [*FAST, "epochs=1", "device=cpu", *extra]), data_dir, runs[name])
        assert info["device"] == "cpu"
    a = torch.load(runs["plain"] / "checkpoints/last.pt", weights_only=True)["model"]
    b = torch.load(runs["flags"] / "checkpoints/last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a), "same seed, same data: same weights (deterministic on CPU)"


def test_cli_training_set_smaller_than_one_batch_is_a_one_line_error(data_dir, tmp_path):
    res = _cli("--data", str(data_dir), "--out", str(tmp_path / "r"), *FAST, "batch_size=256")
    assert res.returncode == 2, res.stderr[-2000:]
    assert res.stderr.strip().count("\n") == 0 and "Traceback" not in res.stderr
    assert "160 samples, fewer than one batch of 256" in res.stderr and "lower batch_size" in res.stderr
    assert not (tmp_path / "r").exists(), "checked before any file is written"


def test_an_epoch_needs_one_whole_batch():
    from ecgka.training.api import check_steps

    check_steps(32, 32)  # exactly one batch: one step
    with pytest.raises(InputError, match="31 samples, fewer than one batch of 32"):
        check_steps(31, 32)
    with pytest.raises(InputError, match="0 samples"):
        check_steps(0, 1)


def _with_nan_label(src: Path, dst: Path, row: int) -> Path:
    """A copy of the dataset ``src`` whose training row ``row`` has a NaN label."""
    import shutil

    import pyarrow as pa

    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".cache"))
    shard = DatasetDir(dst).shards("train")[row // 50]
    table = pq.read_table(shard)
    k = table.column("potassium").to_numpy().copy()
    k[row % 50] = np.nan
    pq.write_table(table.set_column(table.schema.get_field_index("potassium"), "potassium",
                                    pa.array(k, type=pa.float32())), shard)
    return dst


def test_a_non_finite_training_loss_stops_the_run_naming_the_first_bad_step(data_dir, tmp_path):
    from ecgka.training.loader import epoch_batches
    from ecgka.training.meter import NonFiniteLossError

    batches = epoch_batches(160, 32, seed=0, epoch=0)
    row = int(batches[2][5])  # in the third batch of epoch 1; the later steps are NaN too (NaN weights)
    bad = _with_nan_label(data_dir, tmp_path / "ds", row)
    with pytest.raises(NonFiniteLossError, match=r"^epoch 1, step 3: the training loss is nan"):
        train_run(load_train_config(None, [*FAST, "epochs=2", "head_bias_init=default"]), bad, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints" / "last.pt").exists(), "nothing of the bad epoch is saved"


def test_cli_a_diverging_run_is_a_one_line_error(data_dir, tmp_path):
    res = _cli("--data", str(data_dir), "--out", str(tmp_path / "r"), *FAST, "epochs=2", "optim.lr=1e30")
    assert res.returncode == 2, res.stderr[-2000:]
    assert res.stderr.strip().count("\n") == 0 and "Traceback" not in res.stderr
    assert re.search(r"epoch 1, step \d+: the training loss is (nan|inf)", res.stderr), res.stderr


def test_meter_names_the_step_of_a_non_finite_loss_across_flushes_and_a_resume():
    from ecgka.training.meter import EpochMeter, NonFiniteLossError

    meter = EpochMeter({"loss": 2.0, "batches": 4, "samples": 8}, flush_every=3, epoch=1)  # resumed at step 5
    with pytest.raises(NonFiniteLossError, match=r"^epoch 2, step 9: the training loss is inf"):
        for value in (1.0, 1.0, 1.0, 1.0, float("inf"), float("nan")):  # steps 5..10; 9 is the first bad
            meter.add(torch.tensor(value), {}, 2)  # the second flush (steps 8..10) finds it
    tail = EpochMeter(flush_every=10)
    tail.add(torch.tensor(1.0), {}, 2)
    tail.add(torch.tensor(float("-inf")), {}, 2)
    with pytest.raises(NonFiniteLossError, match=r"^epoch 1, step 2: the training loss is -inf"):
        tail.close()  # an epoch shorter than a flush is checked when it closes


def test_prediction_runs_with_tf32_off_and_restores_the_flags(data_dir):
    """Predictions (validation, evaluate) are float32-exact on CUDA: TF32 off inside, the user's flags after."""
    from ecgka.training.build import Runtime
    from ecgka.training.prediction import predict_arrays
    from ecgka.training.sources import EcgSplit

    model = create_model("net1d", preset="tiny", in_channels=2, num_outputs=1)
    seen = []
    model.head.register_forward_hook(lambda *_: seen.append((torch.backends.cuda.matmul.allow_tf32,
                                                             torch.backends.cudnn.allow_tf32)))
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        pred = predict_arrays(model, EcgSplit(load_split(data_dir, "val"), [0, 1]), Runtime(torch.device("cpu")),
                              batch_size=16)
        assert seen and set(seen) == {(False, False)} and pred.dtype == np.float32 and len(pred) == 48
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def test_a_stage_2_config_without_its_stage_1_is_refused(data_dir, tmp_path):
    """Before: configs/train/dist_loss.yaml without --init trained from scratch, labelled "Dist Loss"."""
    cfg = load_train_config(REPO / "configs/train/dist_loss.yaml", [*FAST, "epochs=1"])
    with pytest.raises(ConfigError, match="--init"):
        train_run(cfg, data_dir, tmp_path / "dist")
    assert not (tmp_path / "dist").exists()
    out = _cli("--config", "configs/train/balanced_mse.yaml", "--data", data_dir,
               "--out", tmp_path / "bmse", *FAST, "epochs=1")
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert "stage 2" in out.stderr and "--init" in out.stderr and not (tmp_path / "bmse").exists()
    # end to end from scratch says so (init.mode full); a config that does not declare stage 2 needs no --init
    for config in ("configs/train/dist_loss_e2e.yaml", "configs/train/vanilla.yaml"):
        load_train_config(REPO / config, FAST).init.check_stage_1()
    load_train_config(REPO / "configs/train/dist_loss.yaml", ["init.mode=full"]).init.check_stage_1()


def test_init_from_a_run_of_another_dataset_is_refused_unless_allowed(stage1, data_dir, tmp_path):
    """Before: a stage-1 run of dataset A was accepted silently as the init of a stage 2 on dataset B."""
    other = write_dataset(tmp_path / "other", n_train=96, n_val=32, n_test=32, n_samples=300,
                          leads=("I", "II"), shard_rows=50, seed=5)
    fp_a, fp_b = (DatasetDir(d).read_manifest()["fingerprint"] for d in (data_dir, other))
    assert fp_a != fp_b
    config = REPO / "configs/train/dist_loss.yaml"
    with pytest.raises(InputError, match=f"trained on dataset {fp_a}.*init.allow_other_dataset=true"):
        train_run(load_train_config(config, [*FAST, "epochs=1"]), other, tmp_path / "refused", init=stage1)
    assert not (tmp_path / "refused").exists()
    with pytest.raises(InputError, match="allow_other_dataset"):  # its checkpoint file names the same run
        train_run(load_train_config(config, [*FAST, "epochs=1"]), other, tmp_path / "refused",
                  init=stage1 / "checkpoints" / "best.pt")
    info = train_run(load_train_config(config, [*FAST, "epochs=1", "init.allow_other_dataset=true"]), other,
                     tmp_path / "allowed", init=stage1)
    assert info["init_dataset_fingerprint"] == fp_a and info["init_other_dataset"] is True
    assert info["dataset_fingerprint"] == fp_b
    same = train_run(load_train_config(config, [*FAST, "epochs=1"]), data_dir, tmp_path / "same", init=stage1)
    assert same["init_dataset_fingerprint"] == fp_a and same["init_other_dataset"] is False
