"""The CUDA path: every method's step in fp32 and bf16 + compile, resume on CUDA, CUDA predictions against
the CPU's, torchsort's CUDA kernel, NCCL DDP. ``make test-gpu`` runs them (``pytest -m gpu``); without a
CUDA device they are collected and skipped.

Tolerances: predictions run with TF32 off (``predict_arrays``), so CUDA and CPU differ only by float32
summation order in the convolutions (~1e-6 relative); 1e-4 relative / 1e-5 absolute leaves ~10x margin
and is ~100x below a bf16 rounding of a potassium value (~4 mmol/L x 2^-8 = 0.016). Training on CUDA is not
bitwise deterministic (atomic adds in convolution backward kernels), so a resumed run is compared within
1e-4 absolute after 2 epochs (Adam moves a weight by up to ~lr = 1e-3 per step).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from shard_factory import write_dataset

from ecgka.catalog import DatasetDir, RunDir
from ecgka.labels import LabelGrid
from ecgka.losses import list_losses
from ecgka.training import load_train_config, predict, train_run
from ecgka.training.api import _build_trainer, seed_everything
from ecgka.training.build import (
    Runtime,
    build_criterion,
    build_model,
    build_optimizer,
    make_runtime,
    wrap_network,
)
from ecgka.training.checkpoint import load_checkpoint
from ecgka.training.distributed import DistInfo
from ecgka.training.hooks import CheckpointHook
from ecgka.training.loader import epoch_batches, iterate_batches, to_device
from ecgka.training.shard_loading import load_split
from ecgka.training.sources import EcgSplit, open_split
from ecgka.training.step import train_step

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (make test-gpu)")]

REPO = Path(__file__).resolve().parents[1]
FAST = ["model.preset=tiny", "batch_size=32", "progress=false", "device=cuda"]
CASES = [(name, False) for name in list_losses()] + [(name, True) for name in list_losses() if name != "dist_loss"]
IDS = [f"{n}{'+dist' if d else ''}" for n, d in CASES]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("ds"), n_train=96, n_val=32, n_test=32, n_samples=256)


def _method(name: str, with_dist: bool) -> list[str]:
    return [f"method.name={name}"] + (["method.dist_loss={}"] if with_dist else [])


@pytest.mark.parametrize("precision", ["fp32", "bf16+compile"])
@pytest.mark.parametrize("name,with_dist", CASES, ids=IDS)
def test_steps_of_every_method_on_cuda(data_dir, name, with_dist, precision):
    torch._dynamo.reset()
    cfg = load_train_config(None, [*FAST, *_method(name, with_dist)])
    fast = precision != "fp32"
    runtime = Runtime(torch.device("cuda"), bf16=fast, compile=fast)
    train = load_split(data_dir, "train")
    grid = LabelGrid.from_manifest(DatasetDir(data_dir).read_manifest())
    model = build_model(cfg, 1).to(runtime.device)
    criterion = build_criterion(cfg, train.labels, grid, cfg.batch_size).to(runtime.device)
    optimizer = build_optimizer(cfg, model, criterion)
    net = wrap_network(model, criterion, runtime, DistInfo()).train()
    for epoch in range(2):  # the second epoch uses the first one's statistics (FDS)
        criterion.on_epoch_start(epoch)
        feats = []
        for x, y in iterate_batches(EcgSplit(train, [0]), epoch_batches(len(train), 32, seed=0, epoch=epoch)[:2]):
            x, y = to_device(x, y, runtime.device, True)
            out = train_step(net, criterion, optimizer, x, y, epoch=epoch)
            assert torch.isfinite(out["loss"]) and out["pred"].dtype == torch.float32
            assert out["pred"].device.type == "cuda"
            feats.append((out["features"].cpu(), y.cpu()))
        criterion.on_epoch_end(epoch, torch.cat([f for f, _ in feats]), torch.cat([t for _, t in feats]))
    if fast:
        assert not torch.equal(out["pred"], out["pred"].bfloat16().float()), "predictions are not bf16-rounded"
    torch._dynamo.reset()


def _trainer(cfg, data_dir: Path, run: RunDir):
    seed_everything(cfg.seed)
    manifest = DatasetDir(data_dir).read_manifest()
    train, val = (open_split(data_dir, split, cfg) for split in ("train", "val"))
    run.checkpoints_dir.mkdir(parents=True, exist_ok=True)
    return _build_trainer(cfg, manifest, train, val, make_runtime(cfg), DistInfo(), [CheckpointHook(run)])


@pytest.mark.parametrize("name,with_dist", CASES, ids=IDS)
def test_resume_on_cuda_continues_the_run(data_dir, tmp_path, name, with_dist):
    """1 epoch, then a fresh trainer continues to 2 from last.pt (FDS: its statistics land on the device)."""
    two = load_train_config(None, [*FAST, "epochs=2", *_method(name, with_dist)])
    one = two.model_copy(update={"epochs": 1})
    whole = _trainer(two, data_dir, RunDir(tmp_path / "whole"))
    whole.fit()
    first = _trainer(one, data_dir, RunDir(tmp_path / "resumed"))
    first.fit()
    second = _trainer(two, data_dir, RunDir(tmp_path / "resumed"))
    second.restore(load_checkpoint(RunDir(tmp_path / "resumed").checkpoint("last")))
    second.fit()
    assert second.epoch == whole.epoch == 2
    for key, value in whole.model.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(second.model.state_dict()[key], value, rtol=1e-3, atol=1e-4, msg=key)
    for key, value in second.criterion.state_dict().items():
        assert value.device.type == "cuda" or not value.is_floating_point(), f"criterion {key} left on the CPU"


def test_cuda_predictions_equal_the_cpu_ones(data_dir, tmp_path):
    run = tmp_path / "run"
    train_run(load_train_config(None, [*FAST, "epochs=1", "device=cpu"]), data_dir, run)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True  # predict turns them off
    try:
        cpu, gpu = predict(run, data_dir, "test", device="cpu"), predict(run, data_dir, "test", device="cuda")
    finally:
        torch.backends.cuda.matmul.allow_tf32 = False
    assert torch.backends.cudnn.allow_tf32, "restored after prediction"
    np.testing.assert_allclose(gpu["prediction"], cpu["prediction"], rtol=1e-4, atol=1e-5)
    assert gpu["prediction"].nunique() == len(gpu)


def test_torchsort_runs_its_cuda_kernel():
    torchsort = pytest.importorskip("torchsort")
    x = torch.randn(4, 50, dtype=torch.float32)
    cpu = torchsort.soft_sort(x, regularization_strength=0.1)
    gpu = torchsort.soft_sort(x.cuda(), regularization_strength=0.1)
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-5, atol=1e-5)


def test_one_process_torchrun_trains_on_cuda(data_dir, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", "-m", "ecgka",
           "train", "--data", str(data_dir), "--out", str(out), *FAST, "epochs=1", "bf16=true", "compile=true"]
    res = subprocess.run(cmd, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    info = RunDir(out).read_run()
    assert info["status"] == "complete" and info["device"] == "cuda"


def test_nccl_ddp_step_with_the_compiled_backbone(data_dir):
    """A one-process NCCL group: DDP around the FeatureModel whose backbone is compiled, one bf16 step."""
    import socket

    import torch.distributed as dist

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        torch._dynamo.reset()
        cfg = load_train_config(None, FAST)
        train = load_split(data_dir, "train")
        grid = LabelGrid.from_manifest(DatasetDir(data_dir).read_manifest())
        device = torch.device("cuda", 0)
        model = build_model(cfg, 1).to(device)
        criterion = build_criterion(cfg, train.labels, grid, cfg.batch_size).to(device)
        runtime = Runtime(device, bf16=True, compile=True)
        net = wrap_network(model, criterion, runtime, DistInfo(rank=0, world=2))  # world>1: DDP-wrapped
        assert isinstance(net, torch.nn.parallel.DistributedDataParallel)
        x, y = next(iterate_batches(EcgSplit(train, [0]), epoch_batches(len(train), 32, seed=0, epoch=0)))
        x, y = to_device(x, y, device, True)
        before = model.head.weight.detach().clone()
        out = train_step(net.train(), criterion, build_optimizer(cfg, model, criterion), x, y, epoch=0)
        assert torch.isfinite(out["loss"]) and not torch.equal(before, model.head.weight)
    finally:
        dist.destroy_process_group()
        torch._dynamo.reset()
