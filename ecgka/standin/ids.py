"""MIMIC-like identifiers and ECG carts for the stand-in, without id tables in memory.

Each id is a counter pushed through a seeded affine bijection ``(a * n + b) % M`` (``gcd(a, M) = 1``),
so ids are unique, look random, stay in the real ranges (subjects 10000000-19999999, hospital
admissions 20000000-29999999, ECG studies 40000000-49999999) and depend only on the seed and the
order in which they are drawn.
"""

from __future__ import annotations

import math

import numpy as np

N_CARTS = 40
SPAN = 10_000_000


def affine(seed: int, tag: int, modulus: int) -> tuple[int, int]:
    """(a, b) with gcd(a, modulus) = 1."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(3, tag)))
    while True:
        a = int(rng.integers(modulus // 3, modulus - 1))
        if math.gcd(a, modulus) == 1:
            return a, int(rng.integers(0, modulus))


class Ids:
    """Id sequences of one stand-in; ``next_*`` must be called in a fixed order (subject_id order)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._subject = affine(seed, 0, SPAN)
        self._study = affine(seed, 1, SPAN)
        self._hadm = affine(seed, 2, SPAN)
        self._specimen = affine(seed, 3, 9 * SPAN)
        self.n_study = self.n_hadm = self.n_specimen = 0
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(3, 9)))
        self.cart_ids = rng.choice(np.arange(5000, 10000), N_CARTS, replace=False)
        # cart clocks are not synchronised with the hospital systems: minutes off, a few carts far off
        far = rng.random(N_CARTS) < 0.1
        self.cart_offset_min = np.where(far, rng.normal(0, 25, N_CARTS), rng.normal(0, 3, N_CARTS))

    def subject_id(self, index: int) -> int:
        a, b = self._subject
        return (a * index + b) % SPAN + SPAN

    def subject_order(self, subjects: int) -> list[int]:
        """Subject indices sorted by their subject_id (the order of every output table)."""
        return sorted(range(subjects), key=self.subject_id)

    def next_study(self) -> int:
        a, b = self._study
        self.n_study += 1
        return (a * self.n_study + b) % SPAN + 4 * SPAN

    def next_hadm(self) -> int:
        a, b = self._hadm
        self.n_hadm += 1
        return (a * self.n_hadm + b) % SPAN + 2 * SPAN

    def next_specimen(self) -> int:
        a, b = self._specimen
        self.n_specimen += 1
        return (a * self.n_specimen + b) % (9 * SPAN) + SPAN
