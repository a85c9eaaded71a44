"""Tiny real stage kinds for the pipeline tests (no torch): a stage process finds them through their module
(``ecgka.pipeline.stage_process``: a kind defined outside ecgka names its module in the task)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from ecgka.config import ConfigModel
from ecgka.errors import InputError
from ecgka.pipeline import STAGE_KINDS, StageKind


class TextOptions(ConfigModel):
    text: str
    source: str | None = None
    sleep: float = 0.0  # seconds the stage takes
    fail: bool = False  # fail with a one-line input error after sleeping
    gpu_note: bool = False  # write the CUDA_VISIBLE_DEVICES the stage saw
    wait_for: str | None = None  # a file the stage waits for (a stage that runs until the test lets it end)
    crash: bool = False  # die by SIGKILL, as the kernel's out-of-memory killer does (only in a stage process)


def _run_text(o: TextOptions, out: Path) -> None:
    """Write the text, after the upstream stage's text if any; record the process it runs in."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "pid").write_text(str(os.getpid()))
    time.sleep(o.sleep)
    while o.wait_for and not Path(o.wait_for).exists():
        time.sleep(0.1)
    if o.fail:
        raise InputError(f"{o.text}: refused on purpose")
    if o.crash:
        os.kill(os.getpid(), signal.SIGKILL)
    upstream = (Path(o.source) / "out.txt").read_text() if o.source else ""
    (out / "out.txt").write_text(upstream + o.text)
    if o.gpu_note:
        (out / "cuda").write_text(os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>"))


def _text_complete(o: TextOptions, out: Path) -> bool:
    return (out / "out.txt").is_file()


for name, gpu in (("text", False), ("gpu_text", True)):
    if name not in STAGE_KINDS:
        STAGE_KINDS.register(name)(StageKind(TextOptions, _run_text, _text_complete, path_options=("source",),
                                             gpu=gpu))
