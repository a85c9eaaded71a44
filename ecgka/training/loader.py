"""Batch order and a prefetching batch iterator.

The order of an epoch is a pure function of (seed, epoch): resuming needs no sampler state, and under DDP
every rank draws the same global permutation and takes its own contiguous slice of each global batch.
A background thread prepares the next batches (memmap reads and z-scores release the GIL).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

import numpy as np
import torch

from ecgka.training.shard_loading import SplitData, read_batch, zscore_tensor


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


def _to_tensors(data: SplitData, idx: np.ndarray, leads: list[int], normalise: bool, pin: bool):
    x, y = read_batch(data, idx, leads, normalise)
    xt, yt = torch.from_numpy(x), torch.from_numpy(np.ascontiguousarray(y))
    if pin:
        xt, yt = xt.pin_memory(), yt.pin_memory()
    return xt, yt


def iterate_batches(data: SplitData, batches: list[np.ndarray], leads: list[int], *, normalise: bool = False,
                    prefetch: int = 2, pin_memory: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (signals [B, C, T], labels [B]) for each index array, prepared ``prefetch`` ahead.

    Signals stay float16 unless ``normalise`` (then float32 z-scored on the CPU); ``to_device`` does the
    rest on the training device."""
    if prefetch <= 0:
        for idx in batches:
            yield _to_tensors(data, idx, leads, normalise, pin_memory)
        return
    slots: queue.Queue = queue.Queue(maxsize=prefetch)
    stop = threading.Event()

    def produce() -> None:
        try:
            for idx in batches:
                if stop.is_set():
                    return
                slots.put(_to_tensors(data, idx, leads, normalise, pin_memory))
        except BaseException as exc:  # re-raised in the consumer
            slots.put(exc)
            return
        slots.put(None)

    worker = threading.Thread(target=produce, daemon=True, name="ecgka-prefetch")
    worker.start()
    try:
        while (item := slots.get()) is not None:
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


def to_device(x: torch.Tensor, y: torch.Tensor, device: torch.device, normalise: bool = True
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Move a loader batch to ``device`` and z-score it there (float32)."""
    x = x.to(device, non_blocking=True)
    return (zscore_tensor(x) if normalise else x.float()), y.to(device, non_blocking=True)
