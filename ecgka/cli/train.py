"""``ecgka train --config FILE --data DIR --out RUN_DIR [--init CKPT_OR_RUN] [--force] [key=value ...]``.

Also runs under ``torchrun --nproc_per_node N -m ecgka train ...`` (DistributedDataParallel; rank 0
writes the run directory and prints). Re-running on an existing run directory continues it, extends it
(more ``epochs``) or replaces a failed one; ``--force`` starts over a run of another config.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

HELP = "train a regressor (Net1D on ECGs, ResNet-50 on face ages) with a method (vanilla, Dist Loss, baselines); resumable"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="training config YAML (configs/train/*.yaml); defaults if omitted")
    parser.add_argument("--data", required=True,
                        help="dataset: a directory from `ecgka build`, an age split CSV (age,path,split; "
                             "images under data.image_root, default its folder) or an `ecgka age pack` folder")
    parser.add_argument("--out", required=True,
                        help="run directory: new, or continued/extended when it holds this config's run")
    parser.add_argument("--init", default=None,
                        help="stage 2: a stage-1 run directory or checkpoint (sets init.path)")
    parser.add_argument("--force", action="store_true",
                        help="start over a complete or resumable run of another config in --out")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides, e.g. epochs=3 method.name=lds model.preset=small")


def _is_main() -> bool:
    return os.environ.get("RANK", "0") == "0"


def _note(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def ending(summary: dict[str, Any], run_dir: str, data_dir: str) -> list[str]:
    """The lines a finished ``train`` prints: the run, its best checkpoint and the next command."""
    from ecgka.catalog import RunDir

    run = RunDir(run_dir)
    best = summary.get("best_epoch")
    value = summary.get("best_value")
    chosen = (f"best epoch {best + 1}/{summary.get('epochs_done')} ({summary.get('selection_metric')} "
              f"{value:.4f} on val)" if best is not None and value is not None else "no best epoch")
    return [f"trained {summary.get('display_name')} in {run.path}: {chosen}",
            f"  best checkpoint: {run.checkpoint('best')}",
            f"  next: ecgka evaluate {run.path} --data {data_dir}"]


def run(args: argparse.Namespace) -> int:
    from ecgka.training.config import load_train_config

    cfg = load_train_config(args.config, args.overrides)
    from ecgka.training.api import train_run  # heavy (torch): after the config is known to be valid

    try:
        summary = train_run(cfg, args.data, args.out, init=args.init, force=args.force, log=_note)
    except KeyboardInterrupt:
        if _is_main():
            _note(f"ecgka train: interrupted; {args.out} keeps its last saved epoch: resume with the same command")
        return 130
    if _is_main():
        print("\n".join(ending(summary, args.out, args.data)))
    return 0
