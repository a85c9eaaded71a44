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


def _gather_worker(rank: int, world: int, port: int, queue) -> None:
    import torch.distributed as dist

    from ecgka.training.distributed import gather_with_grad

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    full = torch.arange(8, dtype=torch.float64).mul(0.37).sin()
    local = full[rank * 4:(rank + 1) * 4].clone().requires_grad_(True)
    gathered = gather_with_grad(local)
    loss = (torch.sort(gathered).values * torch.linspace(0, 1, 8, dtype=torch.float64)).sum() + gathered.pow(3).sum()
    loss.backward()
    grads = [torch.empty(4, dtype=torch.float64) for _ in range(world)]
    dist.all_gather(grads, local.grad / world)  # DDP averages what each rank computed
    queue.put((rank, torch.cat(grads).tolist(), gathered.detach().tolist()))
    dist.destroy_process_group()


def test_gather_with_grad_gives_the_gradient_of_the_global_loss():
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_gather_worker, args=(r, 2, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = dict((r, (g, v)) for r, g, v in (queue.get(timeout=120) for _ in procs))
    for p in procs:
        p.join(timeout=60)
    full = torch.arange(8, dtype=torch.float64).mul(0.37).sin().requires_grad_(True)
    loss = (torch.sort(full).values * torch.linspace(0, 1, 8, dtype=torch.float64)).sum() + full.pow(3).sum()
    loss.backward()
    for rank in (0, 1):
        grads, values = results[rank]
        torch.testing.assert_close(torch.tensor(values, dtype=torch.float64), full.detach())
        # each rank's slice gets world x the global gradient; DDP's average (/ world) gives it exactly
        torch.testing.assert_close(torch.tensor(grads, dtype=torch.float64), full.grad)
