"""One stage, run by itself: what the sequential runner calls in-process and a parallel run in a process.

``python -m ecgka.pipeline.stage_process < TASK.json`` runs the stage a task (JSON on stdin) describes (its kind, its
resolved options, its output folder, whether to start afresh) and exits like an ``ecgka`` command: 0 when
done, the error's exit code with one ``error: ...`` line on stderr (2 for bad input, 75 for a folder
another process writes), 143 after SIGTERM. A stage in its own process cannot take down the Dask worker or
the other stages, however it ends (a crash, an out-of-memory kill).

A stage kind registered outside ``ecgka`` (a plugin, a test) names the module that registers it in the
task (``module``, with the folder it is imported from), so the process finds it too.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from ecgka.config import validate_config
from ecgka.errors import ConfigError, EcgkaError
from ecgka.locks import FolderLock
from ecgka.pipeline.stages import STAGE_KINDS, StageKind


def execute_stage(stage_id: str, kind: StageKind, options: Any, output: Path, fresh: bool) -> None:
    """Lock what the stage writes, empty it when made from other inputs (``fresh``), run the stage."""
    lock_target = kind.lock_of(options, output)
    with FolderLock(lock_target, f"stage {stage_id!r} output") if lock_target else contextlib.nullcontext():
        if fresh:
            kind.reset(output)  # made from other inputs: start afresh instead of resuming
        kind.run(options, output)


def plugin_of(kind: StageKind) -> dict[str, str] | None:
    """The module (and the folder it is imported from) that registers a stage kind defined outside ecgka."""
    module = getattr(kind.run, "__module__", "") or ""
    if module.split(".")[0] == "ecgka":
        return None
    if module in ("__main__", "__mp_main__"):
        raise ConfigError(f"stage kind {getattr(kind.options_model, '__name__', '?')}: registered in a script "
                          "(__main__), which a stage process cannot import: register it in a module")
    loaded = sys.modules.get(module)
    path = getattr(loaded, "__file__", None)
    if path is None:
        return {"module": module, "path": ""}
    depth = module.count(".") + 1  # pkg.mod lives in <path>/pkg/mod.py
    return {"module": module, "path": str(Path(path).resolve().parents[depth - 1])}


def task_of(stage_id: str, kind_name: str, kind: StageKind, raw: dict[str, Any], output: Path,
            fresh: bool) -> dict[str, Any]:
    """What a stage process needs (JSON): the stage, its kind, its resolved options and its output."""
    return {"stage": stage_id, "kind": kind_name, "options": raw, "output": str(output), "fresh": fresh,
            "plugin": plugin_of(kind), "gpu": kind.gpu}


def run_task(task: dict[str, Any]) -> None:
    """Run the stage a task (:func:`task_of`) describes, in this process."""
    plugin = task.get("plugin")
    if plugin:
        if plugin.get("path") and plugin["path"] not in sys.path:
            sys.path.insert(0, plugin["path"])
        importlib.import_module(plugin["module"])
    kind = STAGE_KINDS.get(task["kind"])
    options = validate_config(kind.options_model, task["options"], source=f"stage {task['stage']!r}")
    execute_stage(task["stage"], kind, options, Path(task["output"]), bool(task["fresh"]))


def _end_with_parent(parent_pid: int) -> bool:
    """Get SIGTERM when the Dask worker thread that started this process ends (Linux ``PR_SET_PDEATHSIG``),
    so a stage never outlives its worker; False when that worker is gone already."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the worker's cancellation still ends the stage
        pass
    return os.getppid() == parent_pid


def main(argv: list[str] | None = None) -> int:
    from ecgka.cli import handle_sigterm, interrupt_exit_code

    args = sys.argv[1:] if argv is None else argv
    if args:
        print("usage: python -m ecgka.pipeline.stage_process < TASK.json", file=sys.stderr)
        return 2
    handle_sigterm()
    try:
        task = json.loads(sys.stdin.read())
        if task.get("parent_pid") and not _end_with_parent(int(task["parent_pid"])):
            return 143  # the Dask worker that started it is gone already
        run_task(task)
    except EcgkaError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    except OSError as exc:  # a path that cannot be written (permission, disk full)
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt as exc:
        print("error: interrupted", file=sys.stderr, flush=True)
        return interrupt_exit_code(exc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
