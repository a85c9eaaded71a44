"""What several benchmarks share: a scratch folder removed afterwards, and a stand-in to build from."""

from __future__ import annotations

import argparse
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def run_in_scratch(prefix: str, run: Callable[[argparse.Namespace, Path], None], args: argparse.Namespace) -> None:
    """``run(args, tmp)`` in a fresh temporary folder, removed afterwards."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        run(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def standin(args: argparse.Namespace, tmp: Path) -> Path:
    """``--standin`` if given, else a fresh stand-in of ``--subjects`` subjects (seed 0, one worker) in ``tmp``."""
    if args.standin is not None:
        return args.standin
    from ecgka.standin import generate_standin

    generate_standin(tmp / "standin", subjects=args.subjects, seed=0, workers=1)
    return tmp / "standin"
