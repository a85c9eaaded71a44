"""BatchNorm re-estimation with dropout off (the dropout/BatchNorm variance shift)."""

from __future__ import annotations

import numpy as np
import torch
from shard_factory import write_dataset
from torch import nn

from ecgka.training.bn_recalibration import recalibrate_batchnorm
from ecgka.training.shard_loading import load_split, read_batch
from ecgka.training.sources import EcgSplit


class DropThenNorm(nn.Module):
    """Dropout feeding a BatchNorm, as in Net1D's pre-activated convolutions."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(1, 4, 9, padding=4, bias=False)
        self.drop = nn.Dropout(0.5)
        self.norm = nn.BatchNorm1d(4)

    def forward(self, x):
        return self.norm(self.conv(self.drop(x))).mean(dim=(1, 2))


def test_statistics_become_the_eval_mode_ones(tmp_path):
    data_dir = write_dataset(tmp_path / "data", n_train=96, n_val=16, n_test=16, n_samples=500)
    data = load_split(data_dir, "train")
    torch.manual_seed(0)
    model = DropThenNorm()
    x_all, _ = read_batch(data, np.arange(len(data)), [0])
    x_all = torch.from_numpy(x_all)
    model.train()
    for _ in range(20):  # running statistics gathered with dropout active
        model(x_all)
    with torch.no_grad():
        pre = model.conv(x_all)  # what the BatchNorm sees in eval mode (dropout off)
    want_mean = pre.mean(dim=(0, 2))
    want_var = pre.var(dim=(0, 2), unbiased=True)
    assert not torch.allclose(model.norm.running_var, want_var, rtol=0.05)  # the variance shift
    recalibrate_batchnorm(model, EcgSplit(data, [0]), samples=len(data), batch_size=len(data), seed=0, epoch=0,
                          device=torch.device("cpu"), normalise=True)
    assert torch.allclose(model.norm.running_mean, want_mean, atol=1e-5)
    assert torch.allclose(model.norm.running_var, want_var, rtol=1e-4)
    assert model.training and model.norm.momentum == 0.1  # state restored
    weights = model.conv.weight.clone()
    recalibrate_batchnorm(model, EcgSplit(data, [0]), samples=len(data), batch_size=32, seed=0, epoch=1,
                          device=torch.device("cpu"), normalise=True)
    assert torch.equal(model.conv.weight, weights)  # only statistics change
    assert torch.allclose(model.norm.running_mean, want_mean, atol=1e-5)  # batch size does not matter
