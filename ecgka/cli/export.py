"""``ecgka export RUN_DIR --format torchscript|onnx --out DIR [--checkpoint best]``."""

from __future__ import annotations

import argparse

HELP = ("write a standalone model (the per-lead z-score inside; TorchScript via torch.jit.script, any length) "
        "and its JSON card")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN", help="a run folder, or REGISTRY@champion / REGISTRY@v3")
    parser.add_argument("--format", default="torchscript", choices=["torchscript", "onnx"])
    parser.add_argument("--out", required=True, metavar="DIR")
    parser.add_argument("--checkpoint", default="best", choices=["best", "last"])
    parser.add_argument("--force", action="store_true", help="replace another model's export in --out")


def run(args: argparse.Namespace) -> int:
    from ecgka.release.export import export_run
    from ecgka.release.registry import resolve_model

    run_dir, _ = resolve_model(args.run_dir)
    path = export_run(run_dir, args.out, args.format, args.checkpoint, force=args.force)
    print(f"wrote {path} and its card")
    return 0
