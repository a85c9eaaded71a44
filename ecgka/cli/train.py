"""``ecgka train --config FILE --data DIR --out RUN_DIR [--init CKPT_OR_RUN] [key=value ...]``.

Also runs under ``torchrun --nproc_per_node N -m ecgka train ...`` (DistributedDataParallel; rank 0
writes the run directory). Re-running on an existing run directory continues it.
"""

from __future__ import annotations

import argparse
import json
import os

HELP = "train a Net1D regressor with a method (vanilla, Dist Loss, baselines); resumable"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="training config YAML (configs/train/*.yaml); defaults if omitted")
    parser.add_argument("--data", required=True, help="dataset directory from `ecgka build`")
    parser.add_argument("--out", required=True, help="run directory (continued if it exists)")
    parser.add_argument("--init", default=None,
                        help="stage 2: a stage-1 run directory or checkpoint (sets init.path)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides, e.g. epochs=3 method.name=lds model.preset=small")


def run(args: argparse.Namespace) -> int:
    from ecgka.training.config import load_train_config

    cfg = load_train_config(args.config, args.overrides)
    from ecgka.training.api import train_run  # heavy (torch): after the config is known to be valid

    summary = train_run(cfg, args.data, args.out, init=args.init)
    if os.environ.get("RANK", "0") == "0":
        keys = ("display_name", "status", "best_epoch", "selection_metric", "best_value", "epochs_done")
        print(json.dumps({k: summary.get(k) for k in keys}))
    return 0
