"""Console output that never fails the work: a full disk behind ``> /dev/full``, a closed pipe or a
detached terminal loses the message, never the dataset or the run being written."""

from __future__ import annotations

import sys
from typing import Any, TextIO


def say(message: str = "", file: TextIO | None = None, *, end: str = "\n", flush: bool = True) -> bool:
    """Print ``message`` to ``file`` (stdout by default); swallow OSError (ENOSPC, EPIPE, EIO) and
    ValueError (a closed stream) on write and flush. True when it was written."""
    stream: Any = sys.stdout if file is None else file
    try:
        stream.write(message + end)
        if flush:
            stream.flush()
    except (OSError, ValueError):
        _drop_buffer(stream)
        return False
    return True


def _drop_buffer(stream: Any) -> None:
    """Forget what a failed write left in the stream's buffer, so the interpreter's last flush at exit does
    not fail again (and print a traceback-like 'Exception ignored' line)."""
    try:
        fd = stream.fileno()
    except (OSError, ValueError, AttributeError):
        return
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fd)
        os.close(devnull)
        stream.flush()
    except (OSError, ValueError):
        pass
