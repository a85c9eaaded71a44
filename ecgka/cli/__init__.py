"""The ``ecgka`` command line: one subcommand per stage, each in its own module.

A command module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.
Modules are imported only when their command runs, so ``ecgka --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from ecgka import __version__
from ecgka.errors import EcgkaError
from ecgka.names import look_up_option

# command name -> module under ecgka.cli
COMMANDS: dict[str, str] = {
    "synth": "ecgka.cli.synth",
    "build": "ecgka.cli.build",
    "train": "ecgka.cli.train",
    "evaluate": "ecgka.cli.evaluate",
    "report": "ecgka.cli.report",
    "run": "ecgka.cli.run",
    "lineage": "ecgka.cli.lineage",
    "age": "ecgka.cli.age",
    "synth-age": "ecgka.cli.synth_age",
    "registry": "ecgka.cli.registry",
    "export": "ecgka.cli.export",
    "predict": "ecgka.cli.predict",
}

SUMMARIES: dict[str, str] = {
    "synth": "write a MIMIC-IV(-ECG) stand-in with realistic potassium physiology",
    "build": "build ECG-Ka-DIR Parquet shards from MIMIC-IV-ECG and potassium lab exports",
    "train": "train a Net1D regressor with a method (vanilla, Dist Loss, baselines)",
    "evaluate": "predict a split with a trained run and compute few-shot and clinical metrics",
    "report": "write the clinical HTML report (with tables and figures) for one or more runs",
    "run": "run a pipeline of stages (pipelines/NAME.yaml) as one resumable batch job",
    "lineage": "print a dataset version's chain of parents back to the first version",
    "age": "prepare a face-age DIR split (AgeDB-DIR, IMDB-WIKI-DIR) or pack its images into shards",
    "synth-age": "write a small face-age stand-in (DIR split CSV + images whose content depends on age)",
    "registry": "list, show, register and promote model versions (champion/challenger, the gate, the log)",
    "export": "write a standalone TorchScript/ONNX model (z-score inside) with its JSON card",
    "predict": "score ECGs without a lab with a registered model or a run (Parquet out)",
}


def _top_level_help() -> str:
    width = max(len(n) for n in COMMANDS)
    lines = [f"usage: ecgka {{{','.join(COMMANDS)}}} ... (ecgka COMMAND --help)", "", "commands:"]
    lines += [f"  {name:<{width}}  {SUMMARIES[name]}" for name in COMMANDS]
    lines += ["", f"ecgka {__version__}"]
    return "\n".join(lines)


def build_parser(command: str) -> argparse.ArgumentParser:
    module = importlib.import_module(COMMANDS[command])
    parser = argparse.ArgumentParser(prog=f"ecgka {command}", description=module.HELP)
    module.add_arguments(parser)
    parser.set_defaults(_run=module.run)
    return parser


# exit status of a command whose reader went away (``ecgka run --list | head``): 128 + SIGPIPE, as a Unix
# tool killed by SIGPIPE reports it
BROKEN_PIPE_EXIT = 141


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; a closed stdout (a pipe into ``head``) ends it quietly, like any Unix tool."""
    try:
        try:
            return _main(argv)
        finally:  # also when argparse exits after --help: the flush is where a closed pipe shows
            sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()
        return BROKEN_PIPE_EXIT


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's final flush does not fail a second time."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no real file descriptor (stdout replaced in-process)
        pass


def _main(argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"}:
        print(_top_level_help())
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"ecgka {__version__}")
        return 0
    try:
        command = look_up_option(argv[0], list(COMMANDS), "command")
    except EcgkaError as exc:
        print(f"ecgka: error: {exc}", file=sys.stderr)
        return exc.exit_code
    parser = build_parser(command)
    args = parser.parse_intermixed_args(argv[1:])
    try:
        return int(args._run(args) or 0)
    except EcgkaError as exc:
        print(f"ecgka {command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"ecgka {command}: interrupted", file=sys.stderr)
        return 130
