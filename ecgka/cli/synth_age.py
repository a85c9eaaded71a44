"""``ecgka synth-age``: write a face-age stand-in in the DIR format (see docs/age.md)."""

from __future__ import annotations

import argparse

HELP = "write a small face-age stand-in (DIR split CSV + PNG images whose content depends on age)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (must not exist or be empty)")
    parser.add_argument("--n", type=int, default=1000, metavar="N", help="images (default 1000)")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="random seed; same seed, same bytes")
    parser.add_argument("--size", type=int, default=32, metavar="PX", help="image side in pixels (default 32)")


def run(args: argparse.Namespace) -> int:
    from ecgka.age.standin import generate_age_standin

    summary = generate_age_standin(args.out, n=args.n, seed=args.seed, size=args.size)
    print(f"stand-in written to {summary['out']}: train {summary['train']}, val {summary['val']}, "
          f"test {summary['test']}\n  use: --csv {summary['csv']} --images {summary['image_root']}")
    return 0
