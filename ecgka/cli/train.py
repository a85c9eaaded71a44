"""``ecgka train --config FILE --data DIR --out RUN_DIR [--init CKPT_OR_RUN] [--force] [key=value ...]``.

Also runs under ``torchrun --nproc_per_node N -m ecgka train ...`` (DistributedDataParallel; rank 0
writes the run directory and prints). Re-running on an existing run directory continues it, extends it
(more ``epochs``) or replaces a failed one; ``--force`` starts over a run of another config.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from ecgka.cli.options import Command, TrainCommand
from ecgka.console import say


def _is_main() -> bool:
    return os.environ.get("RANK", "0") == "0"


def _note(line: str) -> None:
    say(line, sys.stderr)


def ending(summary: dict[str, Any], run_dir: str, data_dir: str) -> list[str]:
    """The lines a finished ``train`` prints: the run, its best checkpoint and the next command."""
    from ecgka.catalog import RunDir

    run = RunDir(run_dir)
    best = summary.get("best_epoch")
    value = summary.get("best_value")
    chosen = (f"best epoch {best}/{summary.get('epochs_done')} ({summary.get('selection_metric')} "
              f"{value:.4f} on val)" if best is not None and value is not None else "no best epoch")
    return [f"trained {summary.get('display_name')} in {run.path}: {chosen}",
            f"  best checkpoint: {run.checkpoint('best')}",
            f"  next: ecgka evaluate {run.path} --data {data_dir}"]


def run(o: TrainCommand) -> int:
    cfg = o.load_config()
    try:  # the training API (torch) is imported only now: the config is known to be valid
        summary = o.execute(o.out, cfg=cfg, force=o.force, log=_note)
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (ecgka.cli.Terminated: Slurm, Kubernetes)
        from ecgka.cli import interrupt_exit_code, interrupt_word

        if _is_main():
            _note(f"ecgka train: {interrupt_word(exc)}; {o.out} keeps its last saved epoch: resume with the same "
                  "command")
        return interrupt_exit_code(exc)
    if _is_main():
        say("\n".join(ending(summary, o.out, o.data)))
    return 0


COMMAND = Command(TrainCommand, run)
