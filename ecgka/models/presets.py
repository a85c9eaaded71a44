"""Named Net1D configurations.

- ``small``: the Net1D the Dist Loss authors used for PPG (195,361 parameters with one output).
- ``large``: the published large Net1D (30,655,025 parameters with one output).
- ``ecg`` (default): a light ECG configuration for 500 Hz x 10 s single-lead input that trains on a
  laptop CPU (stride 4 per stage, k = 16 = 32 ms at 500 Hz; 118,697 parameters) with Dropout(0.1):
  Dropout(0.5) before every convolution shifts eval-mode predictions (BatchNorm statistics gathered under
  dropout's variance inflation), measured +1 mmol/L on the stand-in; see docs/training.md.
- ``tiny``: for tests only (fast on short signals).
"""

from __future__ import annotations

from typing import Any

NET1D_PRESETS: dict[str, dict[str, Any]] = {
    "small": dict(base_filters=32, ratio=1.0, filter_list=[32, 64, 128], m_blocks_list=[2, 2, 2],
                  kernel_size=5, stride=2, groups_width=32),
    "large": dict(base_filters=64, ratio=1.0, filter_list=[64, 160, 160, 400, 400, 1024, 1024],
                  m_blocks_list=[2, 2, 2, 3, 3, 4, 4], kernel_size=16, stride=2, groups_width=16),
    "ecg": dict(base_filters=16, ratio=1.0, filter_list=[16, 32, 64, 128], m_blocks_list=[1, 1, 1, 1],
                kernel_size=16, stride=4, groups_width=16, dropout=0.1),
    "tiny": dict(base_filters=8, ratio=1.0, filter_list=[8, 16], m_blocks_list=[1, 1],
                 kernel_size=5, stride=4, groups_width=8),
}

DEFAULT_NET1D_PRESET = "ecg"

# ResNet (ecgka.models.resnet): ``resnet50`` is torchvision's ResNet-50 layout (23,510,081 parameters with 3
# input channels and one output); ``tiny`` is for tests (two stages of one block, 8 base channels: runs at
# 32 x 32 in milliseconds).
RESNET_PRESETS: dict[str, dict[str, Any]] = {
    "resnet50": dict(layers=(3, 4, 6, 3), base_width=64),
    "tiny": dict(layers=(1, 1), base_width=8),
}

DEFAULT_RESNET_PRESET = "resnet50"
