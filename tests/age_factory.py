"""Helpers for the face-age adapter tests: the age stand-in and tiny ResNet-50 runs through the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
AGE_CONFIGS = REPO / "configs" / "train" / "age"
# The tiny preset on the 32 px stand-in, one epoch (CI cost): the paper configs with these overrides.
TINY = ("model.preset=tiny", "data.image.size=32", "data.image.padding=4", "data.image.workers=1", "batch_size=32",
        "epochs=1", "data.eval_batch_size=64", "progress=false", "tensorboard=false", "threads=1")


def ecgka(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ecgka", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True)


def make_standin(out: Path, n: int = 200, seed: int = 0) -> Path:
    """``ecgka synth-age`` into ``out``; returns its split CSV."""
    done = ecgka("synth-age", "--out", out, "--n", str(n), "--seed", str(seed))
    assert done.returncode == 0, done.stderr[-2000:]
    return out / "age_dir.csv"


def train(csv: Path, out: Path, method: str, *overrides: str, init: Path | None = None) -> subprocess.CompletedProcess:
    """``ecgka train --config configs/train/age/<method>.yaml --data CSV`` with the tiny overrides."""
    args = ["train", "--config", AGE_CONFIGS / f"{method}.yaml", "--data", csv, "--out", out]
    args += ["--init", init] if init is not None else []
    done = ecgka(*args, *TINY, *overrides)
    assert done.returncode == 0, done.stderr[-2000:]
    return done
