"""Data: the MIMIC-IV stand-in generator (``ecgka.data.synth``) and the ECG-Ka-DIR build
(``ecgka.data.build``: labs, pairing, signal reading and QC, splits, shards, manifest).

``build_dataset``, ``BuildConfig`` and ``generate_standin`` are re-exported lazily (importing
``ecgka.data`` stays cheap).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "build_dataset": "ecgka.data.build",
    "BuildConfig": "ecgka.data.config",
    "generate_standin": "ecgka.data.synth",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ecgka.data' has no attribute {name!r}")
