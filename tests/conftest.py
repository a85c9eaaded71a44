"""Shared test fixtures: paths to ../shared (real fixtures, never copied into the repo)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# CI clones the repo beside a copy of shared/; a developer checkout has it at ../shared too.
SHARED = Path(os.environ.get("ECGKA_SHARED", REPO_ROOT.parent / "shared"))

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("ECGKA_MIN_N_BOOT", "1")  # quick evaluations (n_boot=10); the default minimum is 200


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared folder not found at {SHARED}")
    return SHARED


@pytest.fixture(scope="session")
def wfdb_fixtures(shared_dir: Path) -> Path:
    return shared_dir / "fixtures" / "wfdb"
