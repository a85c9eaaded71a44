"""The image kind's options (``data.image`` of a training config): light, so a config loads without numpy."""

from __future__ import annotations

from pydantic import Field

from ecgka.config import ConfigModel


class ImageOptions(ConfigModel):
    """How face images are found and decoded (``data.image`` of a training config)."""

    root: str | None = None  # the folder a split CSV's paths are relative to; None: the CSV's own folder
    size: int = Field(224, ge=8)  # Resize((s, s)) and the crop side
    padding: int = Field(16, ge=0)  # RandomCrop padding
    workers: int = Field(1, ge=1)  # decoding threads per batch
