"""Running sums of one epoch: losses and their terms, batches, samples, seconds.

Per-step losses stay on the device and are added on the host every ``flush_every`` steps (one copy, not
a synchronising ``float()`` per step; the same additions in the same order, so a resumed epoch sums to
the same values). ``snapshot``/``resume`` carry a partly done epoch across a mid-epoch checkpoint.
A non-finite loss is found at the flush (no extra host sync) and stops the run naming the first bad step.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

from ecgka.errors import EcgkaError


class NonFiniteLossError(EcgkaError):
    """The training loss became NaN or infinite (diverged run or a bad label): the run stops."""


class EpochMeter:
    def __init__(self, state: dict[str, Any] | None = None, flush_every: int = 10, epoch: int = 0,
                 any_rank: Callable[[bool], bool] | None = None):
        state = dict(state or {})
        self.epoch = epoch  # counted from 0 (messages count from 1)
        self.any_rank = any_rank  # under DDP: "is the flag set on any rank" (every rank stops together)
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
        self._check_finite(rows[:, 0].tolist())
        for values in rows.tolist():
            self.loss += values[0]
            for name, value in zip(names, values[1:], strict=True):
                self.terms[name] = self.terms.get(name, 0.0) + value
        self._pending.clear()

    def _check_finite(self, losses: list[float]) -> None:
        """Stop at the first non-finite loss of the flushed steps (on every rank when any rank has one)."""
        bad = next((i for i, v in enumerate(losses) if not math.isfinite(v)), None)
        if not (self.any_rank(bad is not None) if self.any_rank else bad is not None):
            return
        first = self.batches - len(losses) + 1
        if bad is None:  # found on another rank: this rank names the flushed steps
            where, what = f"epoch {self.epoch + 1}, steps {first}-{self.batches}", "another process's loss is not finite"
        else:
            where, what = f"epoch {self.epoch + 1}, step {first + bad}", f"the training loss is {losses[bad]}"
        raise NonFiniteLossError(f"{where}: {what}; the run stops (lower optim.lr or check the labels)")

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
