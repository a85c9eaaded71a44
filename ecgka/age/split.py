"""The balanced val/test rule of the DIR age benchmarks (AgeDB-DIR, IMDB-WIKI-DIR).

Python's ``random`` is seeded with 666; for each integer age 0..120 in turn, that age's paths (in metadata
order) are shuffled with ``random.shuffle``; with ``n = min(count // 3, cap)`` the first n go to val, the
next n to test and the rest to train. Rows whose age is not an integer in 0..120 get no split (``None``).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

SEED = 666
MAX_AGE = 120
CAPS: dict[str, int] = {"agedb": 30, "imdb-wiki": 150}


def balanced_split(ages: Sequence[int], cap: int, seed: int = SEED) -> list[str | None]:
    """The split of each row (``"train"``, ``"val"``, ``"test"`` or None), in row order."""
    by_age: dict[int, list[int]] = {}
    for row, age in enumerate(ages):
        by_age.setdefault(int(age), []).append(row)
    rng = random.Random(seed)  # the same draws as random.seed(seed) + random.shuffle
    splits: list[str | None] = [None] * len(ages)
    for age in range(MAX_AGE + 1):
        rows = by_age.get(age, [])
        rng.shuffle(rows)
        n = min(len(rows) // 3, cap)
        for k, row in enumerate(rows):
            splits[row] = "val" if k < n else "test" if k < 2 * n else "train"
    return splits
