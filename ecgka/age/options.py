"""The image kind's options (``data.image`` of a training config): light, so a config loads without numpy."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ecgka.config import ConfigModel


class ImageOptions(ConfigModel):
    """How face images are found and decoded (``data.image`` of a training config)."""

    root: str | None = None  # the folder a split CSV's paths are relative to; None: the CSV's own folder
    size: int = Field(224, ge=8)  # Resize((s, s)) and the crop side
    padding: int = Field(16, ge=0)  # RandomCrop padding
    workers: int = Field(1, ge=1)  # decoding threads per batch
    # Training ages above the age grid (121-200: IMDB-WIKI prepared with the released rules): ``refuse``
    # (ecgka, the paper profile) or ``top_bin`` (the released code: the loss sees the true age, the
    # training counts, LDS/FDS/INV bins and shot groups count it in the last bin, 120, and the Dist Loss KDE
    # leaves it out). Validation and test ages must lie on the grid either way.
    train_ages_above_grid: Literal["refuse", "top_bin"] = "refuse"
