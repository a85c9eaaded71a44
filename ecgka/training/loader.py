"""Batch order and a prefetching batch iterator.

The order of an epoch is a pure function of (seed, epoch): resuming needs no sampler state, and under DDP
every rank draws the same global permutation and takes its own contiguous slice of each global batch.
A background thread prepares the next batches (memmap reads and z-scores release the GIL).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

import numpy as np
import torch

from ecgka.training.shard_loading import zscore_tensor
from ecgka.training.sources import SplitSource

T = TypeVar("T")


def epoch_batches(n: int, batch_size: int, *, seed: int, epoch: int, rank: int = 0, world: int = 1,
                  shuffle: bool = True, drop_last: bool = True) -> list[np.ndarray]:
    """Index arrays of this rank's batches for ``epoch`` (global batch ``batch_size``, split by rank)."""
    if batch_size % world:
        raise ValueError(f"batch_size {batch_size} is not divisible by the {world} processes")
    order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
    n_full = n // batch_size
    stops = n_full * batch_size if drop_last else n
    per_rank = batch_size // world
    batches = []
    for start in range(0, stops, batch_size):
        chunk = order[start:start + batch_size]
        if len(chunk) == batch_size:
            batches.append(chunk[rank * per_rank:(rank + 1) * per_rank])
        else:
            batches.append(np.array_split(chunk, world)[rank])
    return batches


def augmentation_generator(seed: int, epoch: int, batch: int) -> torch.Generator:
    """The generator of one training batch's augmentation draws: a pure function of (seed, epoch, batch),
    so a run resumed at an epoch boundary or mid-epoch draws exactly what the uninterrupted run drew."""
    state = np.random.SeedSequence([seed, epoch, batch]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def _to_tensors(source: SplitSource, idx: np.ndarray, draws: tuple[int, int, int] | None, pin: bool,
                views: int = 1):
    generator = augmentation_generator(*draws) if draws is not None else None
    if views > 1 and draws is not None:  # ConR's released views: [view 0; view 1; ...] of the same rows
        from ecgka.training.views import augmented_views

        xt, yt = augmented_views(source, idx, generator, draws, views)
    else:
        xt, yt = source.batch(idx, draws is not None, generator)
    if pin:
        xt, yt = xt.pin_memory(), yt.pin_memory()
    return xt, yt


def iterate_batches(source: SplitSource, batches: list[np.ndarray], *, prefetch: int = 2, pin_memory: bool = False,
                    augment: tuple[int, int, int] | None = None, views: int = 1
                    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (inputs, labels [B]) for each index array of a :class:`SplitSource`, prepared ``prefetch`` ahead;
    ``to_device`` does the rest on the training device. ``augment``: training batches,
    ``(seed, epoch, index of the first batch)``: batch k draws from ``augmentation_generator(seed, epoch,
    first + k)``; None: no augmentation (evaluation). ``views`` > 1 (training only): that many independently
    augmented copies of each batch, stacked (``ecgka.training.views``)."""
    keys = [None] * len(batches) if augment is None else [(augment[0], augment[1], augment[2] + k)
                                                          for k in range(len(batches))]
    tensors = (_to_tensors(source, idx, key, pin_memory, views) for idx, key in zip(batches, keys, strict=True))
    return prefetched(tensors, prefetch)


def prefetched(items: Iterable[T], depth: int) -> Iterator[T]:
    """Yield ``items``, each computed up to ``depth`` ahead by a background thread (memmap reads and
    z-scores release the GIL); an error in the thread is raised here; stopping early stops the thread."""
    if depth <= 0:
        yield from items
        return
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                slots.put(item)
        except BaseException as exc:  # re-raised in the consumer
            slots.put(exc)
            return
        slots.put(_DONE)

    worker = threading.Thread(target=produce, daemon=True, name="ecgka-prefetch")
    worker.start()
    try:
        while (item := slots.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while worker.is_alive():
            try:
                slots.get(timeout=0.05)
            except queue.Empty:
                pass
        worker.join()


_DONE = object()


def to_device(x: torch.Tensor, y: torch.Tensor, device: torch.device, normalise: bool = True
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Move a loader batch to ``device`` and (``normalise``) z-score it there (float32)."""
    x = x.to(device, non_blocking=True)
    return (zscore_tensor(x) if normalise else x.float()), y.to(device, non_blocking=True)
