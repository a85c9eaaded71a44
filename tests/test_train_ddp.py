"""DDP: ``torchrun --nproc_per_node 2 -m ecgka train`` on the CPU (gloo) trains and writes one run dir."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from shard_factory import write_dataset

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("ds"), n_train=128, n_val=32, n_test=16, n_samples=256)


def _torchrun(data_dir: Path, out: Path, *overrides: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "ecgka", "train", "--data", str(data_dir), "--out", str(out), "model.preset=tiny",
           "batch_size=32", "epochs=2", "progress=false", "threads=1", *overrides]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [("method.name=vanilla",),
                                       ("method.name=dist_loss", "gather_predictions=true")],
                         ids=["vanilla", "dist_loss_gathered"])
def test_two_cpu_processes_train_one_run_dir(data_dir, tmp_path, overrides):
    out = tmp_path / "run"
    res = _torchrun(data_dir, out, *overrides)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count('"status": "complete"') == 1, "only rank 0 reports"
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "complete" and info["world_size"] == 2
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [0, 1]
    assert log[0]["samples"] == 128  # both ranks' samples: 4 global batches of 32
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    assert not list(out.rglob("*.tmp-*"))
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert state["epoch"] == 2 and all(torch.isfinite(v.float()).all() for v in state["model"].values())
