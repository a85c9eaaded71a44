"""The released AgeDB/IMDB-WIKI-DIR transforms without torchvision, with torchvision's semantics on PIL:

- train: ``Resize((s, s))`` (PIL bilinear), ``RandomCrop(s, padding=p)`` (zero padding; offsets
  ``i = torch.randint(0, h - s + 1, (1,))`` then ``j = torch.randint(0, w - s + 1, (1,))``),
  ``RandomHorizontalFlip`` (``torch.rand(1) < 0.5``), ``ToTensor``, ``Normalize(0.5, 0.5)``;
- eval: ``Resize((s, s))``, ``ToTensor``, ``Normalize(0.5, 0.5)``.

The draws come from ``generator`` (None: torch's global generator, as torchvision), in that order per image.
The crop of the zero-padded image is taken from the resized array directly (same pixels, no padded copy).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

MEAN = STD = 0.5


@dataclass(frozen=True)
class Draw:
    """One image's augmentation: crop offsets in the padded image and the flip."""

    i: int
    j: int
    flip: bool


@dataclass(frozen=True)
class AgeTransform:
    """``size``: output side (224 in the paper); ``padding``: RandomCrop padding (16 in the paper)."""

    size: int = 224
    padding: int = 16

    def draw(self, generator: torch.Generator | None = None) -> Draw:
        span = 2 * self.padding + 1  # padded side - crop side + 1
        i = int(torch.randint(0, span, (1,), generator=generator).item())
        j = int(torch.randint(0, span, (1,), generator=generator).item())
        return Draw(i, j, bool(torch.rand(1, generator=generator).item() < 0.5))

    def resize(self, image: Image.Image) -> np.ndarray:
        """RGB uint8 [size, size, 3] (PIL bilinear, as torchvision's Resize on a PIL image)."""
        return np.array(image.resize((self.size, self.size), Image.Resampling.BILINEAR))

    def augment(self, pixels: np.ndarray, draw: Draw) -> np.ndarray:
        """Crop ``size`` at ``(i, j)`` of the zero-padded image, then flip: uint8 [size, size, 3]."""
        s, p = self.size, self.padding
        out = np.zeros_like(pixels)
        top, left = draw.i - p, draw.j - p  # crop origin in unpadded coordinates
        rows = slice(max(top, 0), min(top + s, s))
        cols = slice(max(left, 0), min(left + s, s))
        out[rows.start - top:rows.stop - top, cols.start - left:cols.stop - left] = pixels[rows, cols]
        return out[:, ::-1] if draw.flip else out

    def __call__(self, image: Image.Image, draw: Draw | None = None) -> torch.Tensor:
        """float32 [3, size, size], normalised; ``draw`` None is the eval transform."""
        pixels = self.resize(image)
        if draw is not None:
            pixels = self.augment(pixels, draw)
        return to_tensor(pixels)


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """ToTensor + Normalize(0.5, 0.5): HWC uint8 -> CHW float32 in [-1, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1).float().div_(255.0)
    return x.sub_(MEAN).div_(STD)
