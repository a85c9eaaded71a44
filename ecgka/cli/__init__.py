"""The ``ecgka`` command line: one subcommand per stage, each in its own module.

``COMMANDS`` is the one table of commands: each names what it runs (``module:ATTR``, a
:class:`ecgka.cli.options.Command`: its options model and its ``run``) and its one-line summary; a group
(``registry``, ``age``) names its subcommands instead. Every parser is generated from the command's options
model (``ecgka/cli/options.py``), imported only when the command runs, so ``ecgka --help`` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import os
import signal
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from ecgka import __version__
from ecgka.console import say
from ecgka.errors import EcgkaError
from ecgka.names import look_up_option


class CommandInfo(NamedTuple):
    """A command: ``module_path`` (``module:ATTR`` of its Command; empty for a group), its summary, and a
    group's subcommands."""

    module_path: str
    summary: str
    subcommands: Mapping[str, CommandInfo] = {}


AGE_SYNTH = CommandInfo("ecgka.cli.age:SYNTH",
                        "write a small face-age stand-in (DIR split CSV + PNG images whose content depends on age)")

COMMANDS: dict[str, CommandInfo] = {
    "synth": CommandInfo("ecgka.cli.synth:COMMAND",
                         "write a MIMIC-IV-ECG v1.0 + MIMIC-IV hosp stand-in with potassium-dependent ECG physiology"),
    "build": CommandInfo("ecgka.cli.build:COMMAND",
                         "build ECG-Ka-DIR Parquet shards from MIMIC-IV-ECG and potassium lab exports"),
    "train": CommandInfo("ecgka.cli.train:COMMAND",
                         "train a regressor (Net1D on ECGs, ResNet-50 on face ages) with a method (vanilla, "
                         "Dist Loss, baselines); resumable"),
    "evaluate": CommandInfo("ecgka.cli.evaluate:COMMAND",
                            "predict a split with a trained run and write its predictions and metrics.json into the "
                            "run (few-shot MAE/MSE/GM, hypo/hyperkalaemia detection with subject-bootstrap CIs)"),
    "report": CommandInfo("ecgka.cli.report:COMMAND",
                          "write the clinical report of evaluated runs: DIR/report.html (self-contained), "
                          "report.md, tables/*.csv, figures/*.png and metrics.json"),
    "run": CommandInfo("ecgka.cli.run:COMMAND",
                       "run a pipeline of stages (pipelines/NAME.yaml) as one resumable batch job"),
    "configs": CommandInfo("ecgka.cli.configs:COMMAND",
                           "list the configs and pipelines that ship with ecgka (usable by name from any folder)"),
    "lineage": CommandInfo("ecgka.cli.lineage:COMMAND",
                           "print a dataset version's chain of parents back to the first version"),
    "age": CommandInfo("", "the face-age benchmarks (AgeDB-DIR, IMDB-WIKI-DIR): prepare a split, pack its images, "
                           "write a stand-in", {
        "prepare": CommandInfo("ecgka.cli.age:PREPARE",
                               "write a face-age DIR split CSV (agedb, imdb-wiki) from the images or a metadata table"),
        "pack": CommandInfo("ecgka.cli.age:PACK", "pack a DIR split's images into Parquet shards"),
        "synth": AGE_SYNTH,
    }),
    "synth-age": AGE_SYNTH,
    "registry": CommandInfo("", "model versions: list, show, register and promote (champion/challenger aliases, "
                                "the gate, the log)", {
        "list": CommandInfo("ecgka.cli.registry:LIST", "list a registry's versions, their aliases and few-shot MAE"),
        "show": CommandInfo("ecgka.cli.registry:SHOW", "print a version's record (model.json)"),
        "register": CommandInfo("ecgka.cli.registry:REGISTER",
                                "register an evaluated run as a new version (with its TorchScript export)"),
        "promote": CommandInfo("ecgka.cli.registry:PROMOTE",
                               "apply the promotion gate to a version against the champion; promote it if it passes"),
        "alias": CommandInfo("ecgka.cli.registry:ALIAS", "set or unset the challenger alias, with a reason (logged)"),
        "rollback": CommandInfo("ecgka.cli.registry:ROLLBACK",
                                "make an earlier version champion again, with a reason (logged)"),
        "archive": CommandInfo("ecgka.cli.registry:ARCHIVE",
                               "archive a version: kept in the registry, never served or made champion (logged)"),
        "mlflow": CommandInfo("ecgka.cli.registry:MLFLOW",
                              "mirror the champion alias to an MLflow model registry (REGISTRY/mlflow.json; logged)"),
    }),
    "export": CommandInfo("ecgka.cli.export:COMMAND",
                          "write a standalone model (the per-lead z-score inside; TorchScript via torch.jit.script, "
                          "any length) and its JSON card"),
    "predict": CommandInfo("ecgka.cli.predict:COMMAND",
                           "score ECGs without a lab (the build's reader, QC and cleaning); rows hold the predicted K, "
                           "hypo/hyper flags at the validation operating points, the model version and the dataset "
                           "digest, or an exclusion"),
}

# another name for a command, dispatched to the same code: alias -> the command's words
ALIASES: dict[str, tuple[str, ...]] = {"synth-age": ("age", "synth")}


def _listing(table: Mapping[str, CommandInfo], usage: str, heading: str, aliases: Mapping[str, tuple[str, ...]],
             summary: str | None = None) -> str:
    width = max(len(n) for n in table)
    lines = [usage, ""] + ([summary, ""] if summary else []) + [f"{heading}:"]
    for name, info in table.items():
        text = f"same as `ecgka {' '.join(aliases[name])}`" if name in aliases else info.summary
        lines.append(f"  {name:<{width}}  {text}")
    return "\n".join(lines)


def _top_level_help() -> str:
    usage = f"usage: ecgka {{{','.join(COMMANDS)}}} ... (ecgka COMMAND --help)"
    return _listing(COMMANDS, usage, "commands", ALIASES) + f"\n\necgka {__version__}"


def _group_help(name: str, info: CommandInfo) -> str:
    usage = f"usage: ecgka {name} {{{','.join(info.subcommands)}}} ... (ecgka {name} SUBCOMMAND --help)"
    return _listing(info.subcommands, usage, "subcommands", {}, summary=info.summary)


def load_command(info: CommandInfo) -> Any:
    """The :class:`ecgka.cli.options.Command` a table entry names (imports its module)."""
    module, _, attr = info.module_path.partition(":")
    return getattr(importlib.import_module(module), attr)


def build_parser(prog: str, info: CommandInfo) -> argparse.ArgumentParser:
    """The parser of one (sub)command, generated from its options model."""
    from ecgka.cli.options import OneLineParser, add_options

    command = load_command(info)
    parser = OneLineParser(prog=prog, description=info.summary)
    add_options(parser, command.options)
    return parser


def resolve_command(argv: list[str]) -> tuple[str, CommandInfo | None, list[str]]:
    """(the command's words, its entry, the rest of argv); the entry is None for a group's help (printed).

    Raises a ConfigError (one line, with "did you mean") for an unknown command or subcommand.
    """
    name = look_up_option(argv[0], list(COMMANDS), "command")
    words, info, rest = [name], COMMANDS[name], argv[1:]
    if name in ALIASES:
        return f"ecgka {name}", info, rest
    if info.subcommands:
        if not rest or rest[0] in {"-h", "--help"}:
            print(_group_help(name, info))
            return f"ecgka {name}", None, rest
        sub = look_up_option(rest[0], list(info.subcommands), f"{name} subcommand")
        words, info, rest = [name, sub], info.subcommands[sub], rest[1:]
    return "ecgka " + " ".join(words), info, rest


# exit status of a command whose reader went away (``ecgka run --list | head``): 128 + SIGPIPE, as a Unix
# tool killed by SIGPIPE reports it
BROKEN_PIPE_EXIT = 141
# exit status after Ctrl-C (128 + SIGINT) and after SIGTERM (128 + SIGTERM: Slurm, Kubernetes, `kill`)
INTERRUPT_EXIT, TERMINATED_EXIT = 130, 143


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is, like Ctrl-C: every path that stops cleanly after Ctrl-C (run.json
    ``interrupted``, temporary folders removed, the folder lock released) runs for it too."""


def _raise_terminated(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM while cleaning up ends the process
    raise Terminated()


def handle_sigterm() -> Any:
    """Turn SIGTERM into :class:`Terminated` (in the main thread only; elsewhere signals cannot be set);
    returns the previous handler (None when none was set)."""
    if threading.current_thread() is threading.main_thread():
        return signal.signal(signal.SIGTERM, _raise_terminated)
    return None


def interrupt_exit_code(exc: BaseException) -> int:
    """143 for SIGTERM, 130 for Ctrl-C."""
    return TERMINATED_EXIT if isinstance(exc, Terminated) else INTERRUPT_EXIT


def interrupt_word(exc: BaseException) -> str:
    return "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; a closed stdout (a pipe into ``head``) ends it quietly, like any Unix tool; a full
    stdout (``> /dev/full``) loses the console output, never the work."""
    try:
        try:
            return _main(argv)
        finally:  # also when argparse exits after --help: the flush is where a closed pipe shows
            sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()
        return BROKEN_PIPE_EXIT
    except OSError:  # stdout on a full disk: what was left in its buffer is lost, the work is done
        _silence_stdout()
        return 0


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
        prog, info, rest = resolve_command(argv)
    except EcgkaError as exc:
        print(f"ecgka: error: {exc}", file=sys.stderr)
        return exc.exit_code
    if info is None:  # a group's help: asked for (0) or no subcommand given (2)
        return 0 if rest else 2
    from ecgka.cli.options import options_from_args

    command = load_command(info)
    args = build_parser(prog, info).parse_intermixed_args(rest)
    previous = handle_sigterm()
    try:
        options = options_from_args(command.options, args)
        with writer_lock(command.options, options):
            return int(command.run(options) or 0)
    except EcgkaError as exc:
        say(f"{prog}: error: {exc}", sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        say(f"{prog}: {interrupt_word(exc)}", sys.stderr)
        return interrupt_exit_code(exc)
    except OSError as exc:  # an output path that cannot be written (permission, a file in the way, disk full)
        if isinstance(exc, BrokenPipeError) or exc.errno == errno.EPIPE:
            raise
        say(f"{prog}: error: {os_error_line(exc)}", sys.stderr)
        return 2
    finally:  # in-process callers (tests, a notebook) get their own SIGTERM handling back
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def writer_lock(model: Any, options: Any) -> Iterator[None]:
    """Hold the lock of the folder a command writes (its options model's ``writes``) while it runs: one writer
    per folder (``ecgka.locks``); a second one is refused with one line naming the holder (exit 75).

    Not taken for a path the command refuses anyway without writing (a file, a folder below a file, a
    non-empty folder ecgka did not write), nor by the ranks of a torchrun job other than 0 (rank 0 writes).
    A folder that did not exist and that the command left empty (it stopped on an error) is removed again.
    """
    name = getattr(model, "writes", None)
    folder = getattr(options, name, None) if name else None
    if not folder or os.environ.get("RANK", "0") != "0" or not _lockable(Path(folder)):
        yield
        return
    from ecgka.locks import FolderLock, lock_path

    path = Path(folder)
    created = _missing_folders(path)
    try:
        with FolderLock(path, model.writes_what):
            try:
                yield
            finally:
                if created and path.is_dir() and [p.name for p in path.iterdir()] == [lock_path(path).name]:
                    lock_path(path).unlink()
    finally:
        for made in created:  # innermost first; stops at the first one that holds something
            try:
                made.rmdir()
            except OSError:
                break


def _missing_folders(path: Path) -> list[Path]:
    """``path`` and those of its parents that do not exist yet, innermost first."""
    missing = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


def _lockable(path: Path) -> bool:
    """Whether the command may write ``path`` at all: missing (below folders), empty but for a lock, or a
    folder ecgka wrote (its kind is the command's to check)."""
    from ecgka.catalog.folders import FOLDER_MARKER
    from ecgka.locks import lock_path

    try:
        if not path.exists():
            return _missing_folders(path)[-1].parent.is_dir()
        if not path.is_dir():
            return False
        return (path / FOLDER_MARKER).is_file() or all(p.name == lock_path(path).name for p in path.iterdir())
    except OSError:  # unreadable: the command says why, in its one line
        return False


def os_error_line(exc: OSError) -> str:
    """``PATH: permission denied``: the path and the reason of an OSError, in one line."""
    reasons = {errno.EACCES: "permission denied", errno.EPERM: "permission denied", errno.EROFS: "read-only file system",
               errno.ENOSPC: "no space left on device", errno.ENOTDIR: "a part of the path is a file, not a folder",
               errno.EISDIR: "is a folder", errno.ENOENT: "not found", errno.EDQUOT: "disk quota exceeded"}
    reason = reasons.get(exc.errno or -1) or (exc.strerror or type(exc).__name__).lower()
    where = exc.filename if exc.filename is not None else None
    return f"{where}: {reason}" if where is not None else reason
