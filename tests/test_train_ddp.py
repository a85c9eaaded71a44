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

from ecgka.training import load_train_config, train_run
from ecgka.training.build import build_model

pytestmark = pytest.mark.slow  # end to end: `make test` runs it, `make test-fast` skips it

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("ds"), n_train=128, n_val=32, n_test=16, n_samples=256)


COMMON = ("model.preset=tiny", "batch_size=32", "epochs=2", "progress=false", "threads=1")


def _torchrun(data_dir: Path, out: Path, *overrides: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "ecgka", "train", "--data", str(data_dir), "--out", str(out), *COMMON, *overrides]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


# Deterministic per sample (no BatchNorm, whose statistics are per rank under DDP; no dropout), so the
# 2-process run must follow the 1-process run with the same global batch of 32.
SAME_MATH = ("model.overrides.use_bn=false", "model.overrides.dropout=0")


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [("method.name=vanilla",),
                                       ("method.name=dist_loss", "gather_predictions=true")],
                         ids=["vanilla", "dist_loss_gathered"])
def test_two_cpu_processes_train_as_one_process_with_the_same_global_batch(data_dir, tmp_path, overrides):
    out = tmp_path / "run"
    res = _torchrun(data_dir, out, *SAME_MATH, *overrides)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("  next: ecgka evaluate ") == 1, "only rank 0 reports"
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "complete" and info["world_size"] == 2
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [0, 1]
    assert log[0]["samples"] == 128  # both ranks' samples: 4 global batches of 32
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    assert not list(out.rglob("*.tmp-*"))
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert state["epoch"] == 2 and all(torch.isfinite(v.float()).all() for v in state["model"].values())
    assert len(state["rng"]) == 2, "every rank's RNG states"
    # Same data order, same initial weights, gradients averaged over 2 x 16 = the mean over 32: the weights
    # after 8 Adam steps differ only by float32 reduction order (~1e-7 relative per step, and Adam's
    # update is at most ~lr = 1e-3 per parameter and step; measured: 6e-8 for both cases), so 1e-5 is
    # ~100x the drift and ~100x below one step: a wrong batch split, a missed gradient average or per-rank
    # data would fail it.
    single = tmp_path / "single"
    cfg = load_train_config(None, [*COMMON, *SAME_MATH, *overrides])
    train_run(cfg, data_dir, single)
    one = torch.load(single / "checkpoints" / "last.pt", weights_only=True)["model"]
    init = build_model(cfg, 1).state_dict()
    moved = max((one[k] - init[k]).abs().max().item() for k in one if one[k].is_floating_point())
    assert moved > 1e-3, "the runs trained: the comparison is meaningful"
    for key, value in one.items():
        torch.testing.assert_close(state["model"][key], value, rtol=1e-4, atol=1e-5, msg=key)


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


def _draws() -> tuple[list[float], list[float], float]:
    import random

    import numpy as np

    return torch.rand(3).tolist(), np.random.rand(3).tolist(), random.random()


def _minimal_trainer(rank: int, world: int):
    from ecgka.training.build import Runtime
    from ecgka.training.config import TrainConfig
    from ecgka.training.distributed import DistInfo
    from ecgka.training.loop import Trainer
    from ecgka.training.sources import EcgSplit

    model = torch.nn.Linear(2, 1)
    return Trainer(cfg=TrainConfig(), model=model, net=model, criterion=torch.nn.Module(),
                   optimizer=torch.optim.Adam(model.parameters()), train=EcgSplit(None, [0]), val=None,
                   runtime=Runtime(torch.device("cpu")), info=DistInfo(rank=rank, world=world), grid=None,
                   train_counts=None)


def _rng_worker(rank: int, world: int, port: int, run_dir: str, queue) -> None:
    import random

    import numpy as np
    import torch.distributed as dist

    from ecgka.catalog import RunDir
    from ecgka.training.checkpoint import load_checkpoint
    from ecgka.training.hooks import CheckpointHook

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    for _ in range(1 + 3 * rank):  # the ranks' generators now differ (as views noise, dropout make them)
        _draws()
    trainer = _minimal_trainer(rank, world)
    hook = CheckpointHook(RunDir(run_dir), write=rank == 0)
    RunDir(run_dir).checkpoints_dir.mkdir(parents=True, exist_ok=True)
    hook.save_last(trainer)  # only rank 0 writes; every rank's states go in
    expected = _draws()
    dist.barrier()
    _draws()  # move on, then continue from last.pt
    trainer.restore(load_checkpoint(RunDir(run_dir).checkpoint("last")))
    queue.put((rank, expected, _draws()))
    dist.destroy_process_group()


def test_ddp_resume_restores_each_ranks_own_generators(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_rng_worker, args=(r, 2, port, str(tmp_path / "run"), queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = {r: (expected, got) for r, expected, got in (queue.get(timeout=120) for _ in procs)}
    for p in procs:
        p.join(timeout=60)
    assert results[0][0] != results[1][0], "the ranks' generators differ"
    for rank in (0, 1):
        assert results[rank][1] == results[rank][0], f"rank {rank} continues its own generators"
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert isinstance(state["rng"], list) and len(state["rng"]) == 2


def test_single_process_checkpoints_old_and_new_restore_the_generators(tmp_path):
    from ecgka.errors import InputError
    from ecgka.training.checkpoint import rng_state

    trainer = _minimal_trainer(0, 1)
    torch.manual_seed(3)
    new, old = trainer.state(), {**trainer.state(), "rng": rng_state()}  # old: one dict, not a list
    assert isinstance(new["rng"], list) and len(new["rng"]) == 1
    expected = _draws()
    for state in (new, old):
        _draws()
        trainer.restore(state)
        assert _draws() == expected
    with pytest.raises(InputError, match="RNG states of 1 processes; it cannot continue on 2"):
        _minimal_trainer(1, 2).restore(new)


def _nan_worker(rank: int, world: int, port: int, queue) -> None:
    import torch.distributed as dist

    from ecgka.training.distributed import DistInfo, any_rank
    from ecgka.training.meter import EpochMeter, NonFiniteLossError

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    info = DistInfo(rank=rank, world=world)
    meter = EpochMeter(flush_every=4, any_rank=lambda flag: any_rank(flag, info, torch.device("cpu")))
    message = None
    try:
        for step in range(8):
            bad = rank == 1 and step == 5  # step 6 of rank 1 only
            meter.add(torch.tensor(float("nan") if bad else 1.0), {}, 2)
    except NonFiniteLossError as exc:
        message = str(exc)
    queue.put((rank, message))
    dist.destroy_process_group()


def test_a_non_finite_loss_on_one_rank_stops_every_rank():
    """Otherwise the other ranks would wait in the next collective for a rank that has stopped."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_nan_worker, args=(r, 2, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    messages = dict(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    assert messages[1].startswith("epoch 1, step 6: the training loss is nan")
    assert messages[0].startswith("epoch 1, steps 5-8: another process's loss is not finite")
