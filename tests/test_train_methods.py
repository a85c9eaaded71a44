"""One real training step per registered method, alone and + Dist Loss, through the method-agnostic step."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from shard_factory import write_dataset

from ecgka.catalog import DatasetDir
from ecgka.labels import LabelGrid
from ecgka.losses import list_losses
from ecgka.training.build import build_criterion, build_model, build_optimizer
from ecgka.training.config import TrainConfig
from ecgka.training.loader import epoch_batches, iterate_batches
from ecgka.training.shard_loading import load_split
from ecgka.training.sources import EcgSplit
from ecgka.training.step import FeatureModel, train_step


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("ds"), n_train=96, n_val=32, n_test=16, n_samples=256)


def _setup(data_dir, method: dict):
    cfg = TrainConfig.model_validate({"method": method, "model": {"preset": "tiny"}, "batch_size": 32})
    torch.manual_seed(0)
    train = load_split(data_dir, "train")
    model = build_model(cfg, 1)
    grid = LabelGrid.from_manifest(DatasetDir(data_dir).read_manifest())
    criterion = build_criterion(cfg, train.labels, grid, cfg.batch_size)
    return cfg, train, model, criterion, build_optimizer(cfg, model, criterion)


CASES = [(name, False) for name in list_losses()] + [(name, True) for name in list_losses() if name != "dist_loss"]


@pytest.mark.parametrize("name,with_dist", CASES, ids=[f"{n}{'+dist' if d else ''}" for n, d in CASES])
def test_one_step_per_method(data_dir, name, with_dist):
    method = {"name": name, "dist_loss": {} if with_dist else None}
    cfg, train, model, criterion, optimizer = _setup(data_dir, method)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    net = FeatureModel(model, criterion.transform_features).train()
    feats = []
    for epoch in range(2):  # the second epoch uses the statistics of the first (FDS)
        criterion.on_epoch_start(epoch)
        batches = epoch_batches(len(train), cfg.batch_size, seed=0, epoch=epoch)
        for x, y in iterate_batches(EcgSplit(train, [0], normalise=True), batches):
            out = train_step(net, criterion, optimizer, x, y, epoch=epoch)
            assert set(out) >= {"loss", "pred", "terms"}
            assert torch.isfinite(out["loss"]) and out["pred"].shape == (cfg.batch_size,)
            assert all(torch.isfinite(v) for v in out["terms"].values())
            feats.append((out["features"], y))
        criterion.on_epoch_end(epoch, torch.cat([f for f, _ in feats]), torch.cat([t for _, t in feats]))
    if with_dist or name == "dist_loss":
        assert any("dist" in term for term in out["terms"])
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert "head.weight" in changed and any(k.startswith("blocks.") for k in changed)


def test_criterion_param_groups_reach_the_optimizer_unscheduled(data_dir):
    cfg, train, model, criterion, optimizer = _setup(data_dir, {"name": "balanced_mse"})
    extra = criterion.param_groups()
    assert extra, "Balanced MSE must own its noise sigma group"
    group = optimizer.param_groups[1]
    assert group["scheduled"] is False and group["lr"] == pytest.approx(extra[0]["lr"])
    sigma = [p.detach().clone() for p in group["params"]]
    x, y = next(iterate_batches(EcgSplit(train, [0], normalise=True), epoch_batches(len(train), 32, seed=0, epoch=0)))
    train_step(FeatureModel(model).train(), criterion, optimizer, x, y, epoch=0)
    assert any(not torch.equal(a, b) for a, b in zip(sigma, group["params"], strict=True))


def test_conr_gets_two_noisy_views(data_dir):
    cfg, train, model, criterion, optimizer = _setup(data_dir, {"name": "conr"})
    assert criterion.requires_views
    seen = []
    net = FeatureModel(model).train()
    net.register_forward_hook(lambda mod, args, out: seen.append(args[0].shape[0]))
    x, y = next(iterate_batches(EcgSplit(train, [0], normalise=True), epoch_batches(len(train), 32, seed=0, epoch=0)))
    out = train_step(net, criterion, optimizer, x, y, epoch=0, views_std=0.1)
    assert seen == [64] and out["pred"].shape == (32,)


def test_fds_transform_sits_between_features_and_head(data_dir):
    calls = []

    def transform(features, target, epoch):
        calls.append(epoch)
        return features * 0  # the head then sees zeros: predictions = head bias

    model = build_model(TrainConfig.model_validate({"model": {"preset": "tiny"}}), 1)
    net = FeatureModel(model, transform).train()
    pred, feats = net(torch.randn(4, 1, 256), torch.ones(4), 3)
    assert calls == [3] and feats.abs().sum() > 0
    torch.testing.assert_close(pred, model.head.bias.expand(4))
    net.eval()
    net(torch.randn(4, 1, 256), torch.ones(4), 3)
    assert calls == [3], "no calibration outside training"


def test_epoch_order_is_a_function_of_seed_and_epoch_and_ranks_partition_it():
    one = epoch_batches(100, 20, seed=1, epoch=2)
    assert all(np.array_equal(a, b) for a, b in zip(one, epoch_batches(100, 20, seed=1, epoch=2), strict=True))
    assert not np.array_equal(one[0], epoch_batches(100, 20, seed=1, epoch=3)[0])
    r0, r1 = (epoch_batches(100, 20, seed=1, epoch=2, rank=r, world=2) for r in (0, 1))
    for full, a, b in zip(one, r0, r1, strict=True):
        assert np.array_equal(np.concatenate([a, b]), full)


def _bf16_rounded(t: torch.Tensor) -> bool:
    return bool(torch.equal(t, t.to(torch.bfloat16).float()))


def test_bf16_autocast_keeps_the_head_and_predictions_in_float32(data_dir):
    """CPU autocast(bf16) runs the same path as CUDA's: the backbone in bf16, the head in float32."""
    from ecgka.training.prediction import predict_arrays
    from ecgka.training.step import autocast, fp32_features

    torch.manual_seed(0)
    model = build_model(TrainConfig.model_validate({"model": {"preset": "tiny"}}), 1).eval()
    x = torch.randn(64, 1, 256)
    net = FeatureModel(model, amp_device="cpu").eval()
    with torch.no_grad():
        pred, feats = net(x)
        with autocast("cpu"):
            old = model(x).float()  # the old path: the whole model under autocast
        expected = model.head(fp32_features(model.forward_features, x, "cpu")).squeeze(-1)
    assert pred.dtype == feats.dtype == torch.float32
    assert _bf16_rounded(old), "the old path (the whole model under autocast) rounds predictions to bf16"
    assert not _bf16_rounded(pred) and len(torch.unique(pred)) == 64
    torch.testing.assert_close(pred, expected, rtol=0, atol=0)
    # prediction (validation, ecgka evaluate) takes the same path
    from ecgka.training.build import Runtime

    train = load_split(data_dir, "val")
    got = predict_arrays(model, EcgSplit(train, [0]), Runtime(torch.device("cpu"), bf16=True), batch_size=16)
    assert not _bf16_rounded(torch.from_numpy(got)) and len(np.unique(got)) == len(train)


def test_bf16_training_step_computes_the_loss_on_float32_predictions(data_dir):
    cfg, train, model, criterion, optimizer = _setup(data_dir, {"name": "vanilla"})
    net = FeatureModel(model, criterion.transform_features, amp_device="cpu").train()
    x, y = next(iterate_batches(EcgSplit(train, [0], normalise=True), epoch_batches(len(train), 32, seed=0, epoch=0)))
    out = train_step(net, criterion, optimizer, x, y, epoch=0)
    assert out["pred"].dtype == torch.float32 and not _bf16_rounded(out["pred"])
    assert torch.isfinite(out["loss"])


@pytest.mark.parametrize("method", [{"name": "vanilla"}, {"name": "fds"}], ids=["vanilla", "fds"])
def test_compiled_backbone_is_compiled_once_across_epochs(data_dir, method):
    """Only ``forward_features`` is compiled: the Python-int epoch (FDS branches on it) never recompiles."""
    from torch._dynamo.testing import CompileCounter

    from ecgka.training.build import Runtime, wrap_network
    from ecgka.training.distributed import DistInfo

    torch._dynamo.reset()
    cfg, train, model, criterion, optimizer = _setup(data_dir, method)
    counter = CompileCounter()
    net = wrap_network(model, criterion, Runtime(torch.device("cpu"), compile=True, compile_backend=counter),
                       DistInfo()).train()
    for epoch in range(3):
        criterion.on_epoch_start(epoch)
        feats = []
        for x, y in iterate_batches(EcgSplit(train, [0], normalise=True), epoch_batches(len(train), 32, seed=0, epoch=epoch)):
            out = train_step(net, criterion, optimizer, x, y, epoch=epoch)
            feats.append((out["features"], y))
        criterion.on_epoch_end(epoch, torch.cat([f for f, _ in feats]), torch.cat([t for _, t in feats]))
    assert counter.frame_count == 1 and torch.isfinite(out["loss"])
    torch._dynamo.reset()
