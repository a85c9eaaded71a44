"""Worker processes started whole: Ctrl-C and SIGTERM are held while a process pool starts its workers.

A spawned worker reads its start-up data from a pipe that its parent writes while starting it; a signal
that interrupts the parent in the middle of that write leaves the worker to die with a traceback on the
shared stderr (``EOFError: Ran out of input``) instead of the command's one-line message. Pools submit
their tasks (which start the workers) inside :func:`signals_held`; a signal that came meanwhile is
delivered as soon as the block ends, to the handler that was in place.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

HELD = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block ends, then deliver the first one that came (main thread only:
    elsewhere Python cannot set handlers, and the block runs as is)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    came: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: came.append(signum)) for s in HELD}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if came:
            signal.raise_signal(came[0])
