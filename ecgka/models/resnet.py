"""ResNet-50 for regression, written from scratch with torchvision's layout and parameter names.

``conv1, bn1, relu, maxpool, layer1..layer4`` (Bottleneck blocks, expansion 4, a ``downsample`` conv+bn
where the shape changes), ``avgpool``, ``fc``; He init (kaiming normal, fan_out, relu) on convolutions,
BatchNorm weight 1 / bias 0, PyTorch's default Linear init (as torchvision). With 3 input channels and one
output: 23,510,081 parameters. torchvision is not needed (its PyPI build does not import beside CPU torch).

Released checkpoints load: the DIR, RankSim, ConR, Balanced MSE and Dist Loss code name the head ``linear``
and save through ``DataParallel`` (keys prefixed ``module.``); :func:`released_keys` maps that layout to
this one whenever a state dict is loaded into a :class:`ResNet` (stage-2 ``--init``, evaluation).
"""

from __future__ import annotations

import torch
from torch import nn

EXPANSION = 4
RELEASED_HEAD = "linear."  # the released code's name of the final linear layer
RELEASED_FDS = "FDS."  # the released FDS statistics live in the model; ecgka keeps them in the criterion


def released_keys(state: dict, prefix: str = "") -> None:
    """Rename, in place, a released checkpoint's keys under ``prefix`` to ecgka's: drop a leading
    ``module.`` (DataParallel), ``linear.*`` -> ``fc.*``, and leave out the released model's ``FDS.*``
    buffers. A state dict already in ecgka's layout is left unchanged."""
    wrapped = prefix + "module."
    if any(k.startswith(wrapped) for k in state):
        for key in [k for k in state if k.startswith(wrapped)]:
            state[prefix + key[len(wrapped):]] = state.pop(key)
    if not any(k.startswith(prefix + "fc.") for k in state):
        for key in [k for k in state if k.startswith(prefix + RELEASED_HEAD)]:
            state[prefix + "fc." + key[len(prefix + RELEASED_HEAD):]] = state.pop(key)
    for key in [k for k in state if k.startswith(prefix + RELEASED_FDS)]:
        del state[key]


def _conv(cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (stride here, as torchvision's ResNet v1.5), 1x1 expand, residual add."""

    def __init__(self, cin: int, width: int, stride: int = 1):
        super().__init__()
        cout = width * EXPANSION
        self.conv1, self.bn1 = _conv(cin, width, 1), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = _conv(width, width, 3, stride), nn.BatchNorm2d(width)
        self.conv3, self.bn3 = _conv(width, cout, 1), nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (nn.Sequential(_conv(cin, cout, 1, stride), nn.BatchNorm2d(cout))
                           if stride != 1 or cin != cout else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class ResNet(nn.Module):
    """A Bottleneck ResNet regressor: ``forward_features(x [B, C, H, W]) -> [B, feature_dim]``."""

    def __init__(self, in_channels: int = 3, num_outputs: int = 1, layers=(3, 4, 6, 3), base_width: int = 64):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, base_width, 7, stride=2, padding=3, bias=False)
        self.bn1, self.relu = nn.BatchNorm2d(base_width), nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        cin = base_width
        for index, blocks in enumerate(layers):
            width = base_width * 2 ** index
            stage = [Bottleneck(cin if b == 0 else width * EXPANSION, width, 2 if b == 0 and index else 1)
                     for b in range(blocks)]
            setattr(self, f"layer{index + 1}", nn.Sequential(*stage))
            cin = width * EXPANSION
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = cin
        self.fc = nn.Linear(cin, num_outputs)
        self._init_weights()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """A released checkpoint's keys are renamed (:func:`released_keys`) before the layers load theirs."""
        released_keys(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    @property
    def head(self) -> nn.Linear:
        return self.fc

    def stages(self) -> list[nn.Module]:
        return [getattr(self, name) for name, _ in self.named_children() if name.startswith("layer")]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for stage in self.stages():
            x = stage(x)
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x)).squeeze(-1)
