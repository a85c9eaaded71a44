"""Running sums of one epoch: losses and their terms, batches, samples, seconds.

Per-step losses stay on the device and are added on the host every ``flush_every`` steps (one copy, not
a synchronising ``float()`` per step; the same additions in the same order, so a resumed epoch sums to
the same values). ``snapshot``/``resume`` carry a partly done epoch across a mid-epoch checkpoint.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

import torch


class EpochMeter:
    def __init__(self, state: dict[str, Any] | None = None, flush_every: int = 10):
        state = dict(state or {})
        self.loss: float = state.get("loss", 0.0)
        self.terms: dict[str, float] = dict(state.get("terms", {}))
        self.batches: int = state.get("batches", 0)
        self.samples: int = state.get("samples", 0)
        self.seconds: float = state.get("seconds", 0.0)
        self.data_seconds: float = state.get("data_seconds", 0.0)
        self.flush_every = flush_every
        self._pending: list[tuple[torch.Tensor, dict[str, torch.Tensor]]] = []
        self._started = time.perf_counter()

    def timed(self, batches: Iterable) -> Iterator:
        """Yield the loader's batches, adding the time spent waiting for each to ``data_seconds``."""
        wait = time.perf_counter()
        for item in batches:
            self.data_seconds += time.perf_counter() - wait
            yield item
            wait = time.perf_counter()

    def add(self, loss: torch.Tensor, terms: dict[str, torch.Tensor], samples: int) -> None:
        self._pending.append((loss, terms))
        self.batches += 1
        self.samples += samples
        if len(self._pending) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        """Add the pending device losses to the host sums (one device-to-host copy)."""
        if not self._pending:
            return
        names = list(self._pending[0][1])
        rows = torch.stack([torch.stack([loss, *terms.values()]).float() for loss, terms in self._pending]).cpu()
        for values in rows.tolist():
            self.loss += values[0]
            for name, value in zip(names, values[1:], strict=True):
                self.terms[name] = self.terms.get(name, 0.0) + value
        self._pending.clear()

    @property
    def elapsed(self) -> float:
        return self.seconds + time.perf_counter() - self._started

    @property
    def mean_loss(self) -> float:
        return self.loss / max(self.batches - len(self._pending), 1)

    def snapshot(self) -> dict[str, Any]:
        """The sums so far (flushed), for a mid-epoch checkpoint."""
        self.flush()
        return {"loss": self.loss, "terms": dict(self.terms), "batches": self.batches, "samples": self.samples,
                "seconds": self.elapsed, "data_seconds": self.data_seconds}

    def close(self) -> dict[str, Any]:
        """Final sums of the epoch (flushed, with the epoch's seconds)."""
        return self.snapshot()
