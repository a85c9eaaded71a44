"""ResNet-50 for regression: torchvision's layout and parameter count, the model contract, the tiny preset."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ecgka.models import count_parameters, create_model, list_presets
from ecgka.models.resnet import Bottleneck


def test_resnet50_parameter_count_and_names():
    model = create_model("resnet50")
    assert count_parameters(model) == 23_510_081
    names = dict(model.named_parameters())
    for name in ("conv1.weight", "bn1.weight", "layer1.0.conv3.weight", "layer1.0.downsample.0.weight",
                 "layer1.0.downsample.1.bias", "layer4.2.bn3.weight", "fc.weight", "fc.bias"):
        assert name in names
    assert [len(getattr(model, f"layer{i}")) for i in range(1, 5)] == [3, 4, 6, 3]
    assert isinstance(model.layer2[0], Bottleneck) and model.layer2[0].conv2.stride == (2, 2)
    assert model.head is model.fc and model.fc.weight.shape == (1, 2048)


def test_he_init_like_torchvision():
    torch.manual_seed(0)
    model = create_model("resnet50")
    conv = model.layer3[0].conv2  # 256 -> 256, 3x3: fan_out = 256 * 9
    assert conv.weight.std().item() == pytest.approx((2.0 / (256 * 9)) ** 0.5, rel=0.02)
    assert torch.all(model.layer3[0].bn2.weight == 1) and torch.all(model.layer3[0].bn2.bias == 0)


@pytest.mark.parametrize("side", [224, 96])
def test_resnet50_contract_shapes(side):
    model = create_model("resnet50").eval()
    x = torch.randn(2, 3, side, side)
    with torch.no_grad():
        features = model.forward_features(x)
        out = model(x)
    assert model.feature_dim == 2048 and features.shape == (2, 2048)
    assert out.shape == (2,)
    assert torch.allclose(out, model.head(features).squeeze(-1))


def test_tiny_preset_is_small_and_trains():
    assert "tiny" in list_presets("resnet50")
    torch.manual_seed(0)
    model = create_model("resnet50", preset="tiny")
    assert count_parameters(model) < 20_000 and isinstance(model.head, nn.Linear)
    x, y = torch.randn(8, 3, 32, 32), torch.linspace(0, 1, 8)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert model(x).shape == (8,) and losses[-1] < losses[0] / 4


def test_net1d_default_channels_unchanged():
    assert create_model("net1d").forward_features(torch.randn(1, 1, 5000)).shape[0] == 1
    assert create_model("resnet50", preset="tiny", in_channels=1)(torch.randn(2, 1, 32, 32)).shape == (2,)
