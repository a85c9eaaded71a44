"""``ecgka synth-age``: a small face-age stand-in in the DIR format (``age,path,split`` + PNG images).

Ages 0..101 are drawn from a right-skewed unimodal shape peaking in the mid-30s (a gamma density, floored
so the extremes stay rare but present), like AgeDB-DIR's training distribution; val and test take the
balanced rule of the real benchmarks with a small cap. Each image is a disc on a background whose
brightness, disc size and red tint are smooth functions of age, plus pixel noise: a model can learn it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from ecgka.age.split import balanced_split
from ecgka.catalog import FolderKind, claim_folder
from ecgka.errors import ConfigError
from ecgka.io import atomic_path

CSV_NAME = "age_dir.csv"
IMAGE_DIR = "images"
MAX_AGE = 101
SHAPE, SCALE, FLOOR = 5.0, 8.5, 0.002  # gamma(k, theta) over age + 1: mode (k - 1) * theta - 1 = 33


def age_weights() -> np.ndarray:
    """The probability of each age 0..MAX_AGE."""
    a = np.arange(MAX_AGE + 1, dtype=np.float64) + 1.0
    density = a ** (SHAPE - 1) * np.exp(-a / SCALE)
    density = np.maximum(density / density.sum(), FLOOR)
    return density / density.sum()


def render(age: float, rng: np.random.Generator, size: int) -> np.ndarray:
    """RGB uint8 [size, size, 3] whose brightness, disc radius and tint grow with age."""
    t = age / MAX_AGE
    yy, xx = np.mgrid[:size, :size] / (size - 1) - 0.5
    disc = (xx ** 2 + yy ** 2) < (0.15 + 0.25 * t) ** 2
    level = 40.0 + 150.0 * t + np.where(disc, 25.0, 0.0)
    pixels = np.stack([level + 30.0 * t, level, level - 20.0 * t], axis=-1)
    pixels += rng.normal(0.0, 10.0, pixels.shape)
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def generate_age_standin(out: str | Path, n: int = 1000, seed: int = 0, size: int = 32,
                         cap: int | None = None, force: bool = False) -> dict:
    """Write ``out/age_dir.csv`` and ``out/images/*.png``; same seed, same bytes. ``out`` must be missing,
    empty or an age stand-in folder (one of other parameters is replaced only with ``force``).
    ``cap``: val/test per age (default ``max(2, n // 250)``)."""
    out = Path(out)
    if n < 30 or size < 8:
        raise ConfigError(f"synth-age: --n must be >= 30 and the image size >= 8 (got {n}, {size})")
    claim = claim_folder(out, FolderKind.AGE_STANDIN)
    content = f"n={n},seed={seed},size={size},cap={cap}"
    claim.check_replace(content, force=force, what=f"the age stand-in {claim.content}")
    rng = np.random.default_rng(seed)
    ages = rng.choice(MAX_AGE + 1, size=n, p=age_weights())
    paths = [f"{IMAGE_DIR}/{k:06d}.png" for k in range(n)]
    table = pd.DataFrame({"age": ages, "path": paths,
                          "split": balanced_split(ages.tolist(), cap or max(2, n // 250), seed=seed)})
    table = table.dropna(subset=["split"])
    with atomic_path(out) as tmp:
        (tmp / IMAGE_DIR).mkdir(parents=True)
        for age, path in zip(ages, paths, strict=True):
            Image.fromarray(render(float(age), rng, size)).save(tmp / path, format="PNG")
        table.to_csv(tmp / CSV_NAME, index=False, lineterminator="\n")
        claim.write_marker(content, root=tmp)
    counts = table["split"].value_counts()
    return {"out": str(out), "csv": str(out / CSV_NAME), "image_root": str(out),
            **{s: int(counts.get(s, 0)) for s in ("train", "val", "test")}}
