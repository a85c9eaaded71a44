"""Shipped configs and pipelines work by name (and by their repository path) from a folder outside the
repository. Before: ``--config configs/train/vanilla.yaml`` and ``pipelines/retrain.yaml`` (its ``gate:``)
failed there, and no name was accepted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from shard_factory import write_dataset

pytestmark = pytest.mark.slow  # subprocesses, a short training

FAST = ["model.preset=tiny", "batch_size=32", "progress=false", "threads=1", "epochs=1"]


def _ecgka(cwd: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ecgka", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture
def elsewhere(tmp_path):
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    return folder


def test_train_by_name_and_by_repository_path(elsewhere):
    write_dataset(elsewhere / "data", n_train=64, n_val=32, n_test=32, n_samples=200, leads=("I",))
    for spelling, out in (("vanilla", "v1"), ("configs/train/vanilla.yaml", "v2")):
        done = _ecgka(elsewhere, "train", "--config", spelling, "--data", "data", "--out", out, *FAST)
        assert done.returncode == 0, done.stderr
        assert json.loads((elsewhere / out / "run.json").read_text())["status"] == "complete"
    done = _ecgka(elsewhere, "train", "--config", "age/dist_loss", "--data", "data", "--out", "d", *FAST)
    assert done.returncode == 2 and "--init" in done.stderr  # found by name (and it is a stage 2)
    done = _ecgka(elsewhere, "train", "--config", "vanila", "--data", "data", "--out", "x", *FAST)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1 and "did you mean vanilla" in done.stderr


def test_pipelines_by_name_check_from_any_folder(elsewhere):
    done = _ecgka(elsewhere, "run", "smoke", "--check")
    assert done.returncode == 0, done.stderr
    (elsewhere / "mimic-ecg").mkdir()
    (elsewhere / "labevents.csv.gz").write_bytes(b"")
    values = ["ecg_root=mimic-ecg", "labs=labevents.csv.gz", "registry=registry", "new_registry=true"]
    for spelling in ("retrain", "pipelines/retrain.yaml"):
        done = _ecgka(elsewhere, "run", spelling, "--check", "--set", *values)
        assert done.returncode == 0, done.stderr
        assert "stages resolve and validate" in done.stdout
    assert not (elsewhere / "outputs").exists()  # --check writes nothing
    done = _ecgka(elsewhere, "run", "retrian", "--check")
    assert done.returncode == 2 and "did you mean retrain" in done.stderr


def test_listings(elsewhere):
    done = _ecgka(elsewhere, "run", "--list")
    assert done.returncode == 0 and {"smoke", "retrain", "demo"} <= set(done.stdout.split())
    done = _ecgka(elsewhere, "configs")
    assert done.returncode == 0
    assert "train configs" in done.stdout and "  vanilla" in done.stdout and "  default" in done.stdout
    assert "pipelines (ecgka run NAME):" in done.stdout
    done = _ecgka(elsewhere, "configs", "gate", "--paths")
    assert done.returncode == 0 and done.stdout.split()[-1].endswith("configs/gate/default.yaml")
    assert Path(done.stdout.split()[-1]).is_file() and "train configs" not in done.stdout
