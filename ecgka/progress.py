"""Progress bars: one rule for every command. A bar is drawn only on a terminal (stderr is a TTY) and only
when the caller has not turned progress off; logs, pipes and CI output get no bar characters."""

from __future__ import annotations

import sys
from typing import Any


def progress_enabled(progress: bool = True) -> bool:
    """True when a bar should be drawn: progress wanted and stderr is a terminal."""
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(progress) and callable(isatty) and bool(isatty())


def progress_bar(iterable: Any = None, *, progress: bool = True, **tqdm_kwargs: Any):
    """A ``tqdm`` bar on stderr, disabled unless ``progress_enabled(progress)``; ``tqdm_kwargs`` as tqdm's
    (``total``, ``desc``, ``unit``, ``leave``...). tqdm is imported here, when a bar is made."""
    from tqdm import tqdm

    options = {"file": sys.stderr, "dynamic_ncols": True, **tqdm_kwargs}
    options["disable"] = bool(tqdm_kwargs.get("disable", False)) or not progress_enabled(progress)
    return tqdm(iterable, **options)
