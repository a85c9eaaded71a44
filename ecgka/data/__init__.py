"""Data: the ECG-Ka-DIR build (``ecgka.data.build``: labs, pairing, signal reading and QC, splits,
shards, manifest). The MIMIC-IV stand-in generator is its own package, ``ecgka.standin``.

``build_dataset`` and ``BuildConfig`` are re-exported lazily (importing ``ecgka.data`` stays cheap).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "build_dataset": "ecgka.data.build",
    "BuildConfig": "ecgka.data.config",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ecgka.data' has no attribute {name!r}")
