"""Data: the ECG-Ka-DIR build (``ecgka.data.build``: labs, pairing, signal reading and QC, splits,
shards, manifest; ``ecgka.data.dataset_versions`` and ``ecgka.data.lineage``: dataset versions). The MIMIC-IV stand-in generator is its own package, ``ecgka.standin``.

``build_dataset`` and ``BuildConfig`` are re-exported lazily (importing ``ecgka.data`` stays cheap).
"""

from __future__ import annotations

from ecgka.lazy import lazy_exports

_EXPORTS = {
    "build_dataset": "ecgka.data.build",
    "BuildConfig": "ecgka.data.config",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
