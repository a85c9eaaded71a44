"""Net1D (Hong et al. 2020): a 1-D ResNeXt-style ECG network with squeeze-excitation.

Built from the published description (``docs/training.md``): SAME-padded convolutions, bottleneck blocks
(1x1 conv -> grouped k conv -> 1x1 conv, each pre-activated by BN + Swish + Dropout), squeeze-excitation
with ratio 2, a max-pooled and channel-padded identity path, mean pooling over time and a linear head.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def _same_padding(length: int, kernel: int, stride: int) -> tuple[int, int]:
    """Left/right zero padding so that the output length is ceil(length / stride) ("SAME")."""
    out_len = math.ceil(length / stride)
    total = max(0, (out_len - 1) * stride + kernel - length)
    return total // 2, total - total // 2


class ConvSame(nn.Module):
    """Conv1d with TensorFlow-style SAME padding."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1):
        super().__init__()
        self.kernel, self.stride = kernel, stride
        self.conv = nn.Conv1d(in_ch, out_ch, kernel, stride=stride, groups=groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, _same_padding(x.shape[-1], self.kernel, self.stride)))


class MaxPoolSame(nn.Module):
    """Max pooling with window = stride = ``kernel`` after SAME-style padding (identity downsampling)."""

    def __init__(self, kernel: int):
        super().__init__()
        self.kernel = kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left, right = _same_padding(x.shape[-1], self.kernel, 1)
        return F.max_pool1d(F.pad(x, (left, right)), self.kernel)


class Swish(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x)


def _pre_activation(channels: int, use_bn: bool, dropout: float) -> list[nn.Module]:
    return [nn.BatchNorm1d(channels) if use_bn else nn.Identity(), Swish(), nn.Dropout(dropout)]


class BottleneckBlock(nn.Module):
    """Pre-activation bottleneck with grouped k-conv, squeeze-excitation and a padded identity."""

    def __init__(self, in_ch: int, out_ch: int, *, ratio: float, kernel: int, stride: int, groups: int,
                 downsample: bool, first: bool, use_bn: bool = True, dropout: float = 0.5):
        super().__init__()
        mid = int(out_ch * ratio)
        self.in_ch, self.out_ch, self.first, self.downsample = in_ch, out_ch, first, downsample
        self.pre1 = nn.Sequential(*_pre_activation(in_ch, use_bn, dropout))
        if first:  # built as in the published network (it counts in the parameters) but never used:
            self.pre1.requires_grad_(False)  # frozen so that DDP does not wait for its gradients
        self.conv1 = ConvSame(in_ch, mid, 1)
        self.pre2 = nn.Sequential(*_pre_activation(mid, use_bn, dropout))
        self.conv2 = ConvSame(mid, mid, kernel, stride=stride, groups=groups)
        self.pre3 = nn.Sequential(*_pre_activation(mid, use_bn, dropout))
        self.conv3 = ConvSame(mid, out_ch, 1)
        self.se_fc1 = nn.Linear(out_ch, out_ch // 2)
        self.se_act = Swish()
        self.se_fc2 = nn.Linear(out_ch // 2, out_ch)
        self.pool = MaxPoolSame(stride) if downsample else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x if self.first else self.pre1(x)
        out = self.conv3(self.pre3(self.conv2(self.pre2(self.conv1(out)))))
        scale = torch.sigmoid(self.se_fc2(self.se_act(self.se_fc1(out.mean(-1)))))
        out = out * scale.unsqueeze(-1)
        identity = self.pool(x)
        if self.out_ch != self.in_ch:
            extra = self.out_ch - self.in_ch
            identity = F.pad(identity, (0, 0, extra // 2, extra - extra // 2))
        return out + identity


class Net1D(nn.Module):
    """Stem conv (stride 2) -> BN -> Swish -> stages of bottleneck blocks -> mean over time -> head.

    ``head_hidden`` inserts ``Linear(C, head_hidden)`` before the final linear layer (the PPG head of the
    Dist Loss authors); it then belongs to the features, so ``head`` is always the last ``nn.Linear``.
    """

    def __init__(self, in_channels: int = 1, base_filters: int = 32, ratio: float = 1.0,
                 filter_list: Sequence[int] = (32, 64, 128), m_blocks_list: Sequence[int] = (2, 2, 2),
                 kernel_size: int = 5, stride: int = 2, groups_width: int = 32, num_outputs: int = 1,
                 head_hidden: int | None = None, use_bn: bool = True, dropout: float = 0.5):
        super().__init__()
        if len(filter_list) != len(m_blocks_list):
            raise ValueError("filter_list and m_blocks_list must have the same length")
        self.stem = nn.Sequential(ConvSame(in_channels, base_filters, kernel_size, stride=2),
                                  nn.BatchNorm1d(base_filters) if use_bn else nn.Identity(), Swish())
        blocks, ch = [], base_filters
        for i_stage, (out_ch, n_blocks) in enumerate(zip(filter_list, m_blocks_list, strict=True)):
            for i_block in range(n_blocks):
                blocks.append(BottleneckBlock(
                    ch if i_block == 0 else out_ch, out_ch, ratio=ratio, kernel=kernel_size,
                    stride=stride if i_block == 0 else 1, groups=max(1, out_ch // groups_width),
                    downsample=i_block == 0, first=i_stage == 0 and i_block == 0,
                    use_bn=use_bn, dropout=dropout))
            ch = out_ch
        self.blocks = nn.Sequential(*blocks)
        self.neck = nn.Linear(ch, head_hidden) if head_hidden else nn.Identity()
        self.feature_dim = head_hidden or ch
        self.head = nn.Linear(self.feature_dim, num_outputs)
        self.num_outputs = num_outputs

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features [B, feature_dim] (the input of ``head``; FDS/RankSim/ConR work on these)."""
        return self.neck(self.blocks(self.stem(x)).mean(-1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.head(self.forward_features(x))
        return out.squeeze(-1) if self.num_outputs == 1 else out
