"""Progress: one rule for every command. A bar is drawn only on a terminal (stderr is a TTY) and only when
the caller has not turned progress off; logs, pipes and CI output get no bar characters. A long stage that
asks for ``lines`` (synth, the build's stages) writes plain lines instead when stderr is not a terminal: one
per 10 % of a known total, or one when a stage of unknown size ends, so a log shows the job is alive.
Console output never fails the work (``ecgka.console``): a full or closed stderr loses the bar, not the job."""

from __future__ import annotations

import sys
from typing import Any

from ecgka.console import say


def progress_enabled(progress: bool = True) -> bool:
    """True when a bar should be drawn: progress wanted and stderr is a terminal."""
    isatty = getattr(sys.stderr, "isatty", None)
    try:
        return bool(progress) and callable(isatty) and bool(isatty())
    except (OSError, ValueError):  # a closed stderr
        return False


class _SafeStream:
    """stderr for tqdm: writes and flushes that fail are dropped."""

    def __init__(self, stream: Any):
        self.stream = stream

    def write(self, text: str) -> None:
        say(text, self.stream, end="", flush=False)

    def flush(self) -> None:
        try:
            self.stream.flush()
        except (OSError, ValueError):
            pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


class LineProgress:
    """tqdm's small interface (``update``, ``total``, ``n``, ``set_postfix``, ``close``, iteration, context
    manager) writing ``DESC: 30% (300/1000 UNIT)`` lines to stderr at each 10 %."""

    def __init__(self, iterable: Any = None, *, total: int | float | None = None, desc: str = "", unit: str = "it",
                 initial: int = 0, **_: Any):
        self.iterable, self.desc, self.unit, self.n = iterable, desc or "progress", unit.strip() or "it", initial
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total, self._said, self._closed = total, 0, False

    def _say(self, text: str) -> None:
        say(f"{self.desc}: {text}", sys.stderr)

    def update(self, n: int | float = 1) -> None:
        self.n += n
        if self.total:
            tenth = int(10 * min(self.n, self.total) // self.total)
            if tenth > self._said and self.n > 0:
                self._said = tenth
                self._say(f"{tenth * 10}% ({self.n:,.0f}/{self.total:,.0f} {self.unit})")

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self.total and self.n:
            self._say(f"done ({self.n:,.0f} {self.unit})")

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def progress_bar(iterable: Any = None, *, progress: bool = True, lines: bool = False, **tqdm_kwargs: Any):
    """A ``tqdm`` bar on stderr, disabled unless ``progress_enabled(progress)``; ``tqdm_kwargs`` as tqdm's
    (``total``, ``desc``, ``unit``, ``leave``...). With ``lines``, progress wanted and stderr not a terminal:
    a :class:`LineProgress` instead. tqdm is imported here, when a bar is made."""
    if lines and progress and not tqdm_kwargs.get("disable", False) and not progress_enabled(progress):
        return LineProgress(iterable, **tqdm_kwargs)
    from tqdm import tqdm

    options = {"file": _SafeStream(sys.stderr), "dynamic_ncols": True, **tqdm_kwargs}
    options["disable"] = bool(tqdm_kwargs.get("disable", False)) or not progress_enabled(progress)
    return tqdm(iterable, **options)
