"""The face-age adapter: AgeDB-DIR and IMDB-WIKI-DIR on ecgka's machinery (docs/age.md).

- ``prepare_split``: released metadata rules + the balanced val/test rule -> ``age,path,split`` CSV;
- ``open_age_split`` / ``open_age_shards``: an :class:`AgeDataset` (labels, ids, deterministic batches);
- ``pack_age_shards``: optional Parquet shards of the encoded images;
- ``generate_age_standin``: a learnable stand-in in the DIR format (``ecgka synth-age``).

Heavy modules are imported on first use, so ``import ecgka.age`` stays light.
"""

from __future__ import annotations

from ecgka.lazy import lazy_exports

_EXPORTS = {
    "AgeDataset": "ecgka.age.dataset", "open_age_split": "ecgka.age.dataset",
    "open_age_shards": "ecgka.age.shards", "pack_age_shards": "ecgka.age.shards",
    "prepare_split": "ecgka.age.prepare", "balanced_split": "ecgka.age.split",
    "AgeTransform": "ecgka.age.transforms", "generate_age_standin": "ecgka.age.standin",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
