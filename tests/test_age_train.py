"""The face-age adapter on the trainer: ``ecgka train --data SPLIT.csv`` with vanilla and Dist Loss, the
dataset-kind registry, exact resume with augmentation, and bad image files."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from age_factory import TINY, make_standin, train

from ecgka.catalog import RunDir
from ecgka.labels import LabelGrid
from ecgka.models import create_model
from ecgka.training.config import load_train_config
from ecgka.training.loader import epoch_batches, iterate_batches
from ecgka.training.sources import describe_dataset, detect_kind, open_split

pytestmark = pytest.mark.slow  # end to end: `make test` runs it, `make test-fast` skips it


@pytest.fixture(scope="module")
def standin(tmp_path_factory) -> Path:
    return make_standin(tmp_path_factory.mktemp("age") / "standin")


@pytest.fixture(scope="module")
def vanilla(standin, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "vanilla"
    train(standin, out, "vanilla")
    return out


def _tiny_config(*extra: str):
    return load_train_config(Path("configs/train/age/vanilla.yaml").resolve(), [*TINY, *extra])


def test_kind_is_detected_and_the_age_grid_describes_the_split(standin):
    cfg = _tiny_config()
    assert detect_kind(standin) == "age-csv"
    desc = describe_dataset(standin, cfg)
    table = pd.read_csv(standin)
    train_ages = table.loc[table["split"] == "train", "age"].to_numpy()
    assert desc.kind == "age-csv" and desc.grid == LabelGrid.preset("age") and desc.grid.shots.rule == "absolute"
    assert list(desc.train_bins.counts) == np.bincount(train_ages, minlength=121).tolist()
    assert desc.fingerprint == hashlib.sha256(standin.read_bytes()).hexdigest()[:16]
    assert desc.counts["train"] == len(train_ages) and desc.unit == "years"
    assert desc.source["image_root"] == str(standin.parent)


def test_vanilla_trains_one_epoch_through_the_cli(vanilla, standin):
    run = RunDir(vanilla)
    info = run.read_run()
    assert info["status"] == "complete" and info["dataset_kind"] == "age-csv"
    assert info["dataset_fingerprint"] == hashlib.sha256(standin.read_bytes()).hexdigest()[:16]
    assert info["selection_metric"] == "mae" and info["method"] == "vanilla"
    cfg = run.read_config()
    assert cfg["model"]["name"] == "resnet50" and cfg["method"]["params"]["base"] == "l1"
    state = torch.load(run.checkpoint("best"), weights_only=True)
    assert state["in_channels"] == 3
    (epoch,) = run.read_log()
    assert np.isfinite(epoch["val"]["mae"]) and epoch["samples"] == 32 * (info["n_train"] // 32)
    assert pd.read_csv(run.bad_files_path).empty  # every stand-in image is readable


def test_dist_loss_stage_two_through_the_cli(vanilla, standin, tmp_path):
    out = tmp_path / "dist_loss"
    done = train(standin, out, "dist_loss", init=vanilla)
    assert "trained Dist Loss" in done.stdout
    info = RunDir(out).read_run()
    assert info["status"] == "complete" and info["stage"] == 2 and info["init"] == str(vanilla)
    head = create_model("resnet50", preset="tiny", in_channels=3).head
    assert info["dist_loss"] is True
    assert info["trainable_parameters"] == sum(p.numel() for p in head.parameters())  # the final linear layer


def test_augmentation_is_a_function_of_seed_epoch_and_batch(standin):
    """A loader started at batch k draws what the full epoch drew at batch k (mid-epoch resume), and
    another epoch draws other crops and flips of the same images."""
    data = open_split(standin, "train", _tiny_config())
    batches = epoch_batches(len(data), 16, seed=0, epoch=0)[:3]
    full = list(iterate_batches(data, batches, prefetch=0, augment=(0, 0, 0)))
    tail = list(iterate_batches(data, batches[1:], prefetch=2, augment=(0, 0, 1)))
    for (x, y), (xt, yt) in zip(full[1:], tail, strict=True):
        assert torch.equal(x, xt) and torch.equal(y, yt)
    other = next(iterate_batches(data, batches[:1], prefetch=0, augment=(0, 1, 0)))[0]
    plain = next(iterate_batches(data, batches[:1], prefetch=0))[0]
    assert not torch.equal(full[0][0], other) and not torch.equal(full[0][0], plain)
    assert full[0][0].shape == (16, 3, 32, 32) and full[0][0].dtype == torch.float32


def test_resume_equals_an_uninterrupted_run(standin, tmp_path):
    """Two epochs in one go, and one epoch then continued from last.pt: every weight bit for bit."""
    from ecgka.training.api import train_run

    def weights(out: Path) -> dict:
        return torch.load(RunDir(out).checkpoint("last"), weights_only=True)["model"]

    train_run(_tiny_config("epochs=2"), standin, tmp_path / "whole")
    train_run(_tiny_config("epochs=1"), standin, tmp_path / "parts")
    train_run(_tiny_config("epochs=2"), standin, tmp_path / "parts")  # continues from last.pt
    whole, parts = weights(tmp_path / "whole"), weights(tmp_path / "parts")
    assert whole.keys() == parts.keys()
    assert all(torch.equal(whole[k], parts[k]) for k in whole)
    assert [e["train_loss"] for e in RunDir(tmp_path / "parts").read_log()] == \
        [e["train_loss"] for e in RunDir(tmp_path / "whole").read_log()]


def test_a_truncated_image_is_skipped_and_listed_in_the_run(standin, tmp_path):
    copy = tmp_path / "standin"
    shutil.copytree(standin.parent, copy)
    table = pd.read_csv(copy / standin.name)
    victim = table.loc[table["split"] == "train", "path"].iloc[3]
    image = copy / victim
    image.write_bytes(image.read_bytes()[:60])  # a truncated PNG
    out = tmp_path / "run"
    train(copy / standin.name, out, "vanilla")
    info = RunDir(out).read_run()
    assert info["status"] == "complete"
    assert info["n_train"] == int((table["split"] == "train").sum()) - 1
    bad = pd.read_csv(RunDir(out).bad_files_path)
    assert bad[["split", "path"]].values.tolist() == [["train", victim]]
    assert bad["reason"].iloc[0] in ("truncated", "corrupt")


def test_evaluate_an_age_run_uses_the_absolute_rule_and_no_clinical_metrics(vanilla, standin):
    from age_factory import ecgka

    done = ecgka("evaluate", vanilla, "--data", standin, "n_boot=10")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "AUROC" not in done.stdout
    metrics = json.loads(RunDir(vanilla).metrics_path("test").read_text())
    assert metrics["clinical"] is None and "roc" not in metrics["figures"]
    assert metrics["shots"]["rule"] == "absolute" and metrics["dataset"]["label"]["unit"] == "years"
    assert metrics["dataset"]["matches_training"] is True
    table = pd.read_csv(standin)
    assert metrics["n"] == int((table["split"] == "test").sum())


def test_a_packed_folder_trains_and_is_the_same_dataset(vanilla, standin, tmp_path):
    """``--data`` a folder of ``ecgka age pack``: detected by its manifest kind, same fingerprint as the CSV
    it was packed from, so the CSV-trained run evaluates on it as its own dataset."""
    from age_factory import ecgka

    packed = tmp_path / "packed"
    done = ecgka("age", "pack", "--csv", standin, "--images", standin.parent, "--out", packed)
    assert done.returncode == 0, done.stderr[-2000:]
    assert detect_kind(packed) == "age-images"
    cfg = _tiny_config()
    assert describe_dataset(packed, cfg).fingerprint == describe_dataset(standin, cfg).fingerprint
    loose, shards = open_split(standin, "val", cfg), open_split(packed, "val", cfg)
    idx = np.arange(8)
    assert torch.equal(loose.batch(idx)[0], shards.batch(idx)[0]) and shards.in_channels == 3
    train(packed, tmp_path / "run", "vanilla")
    assert RunDir(tmp_path / "run").read_run()["dataset_kind"] == "age-images"
