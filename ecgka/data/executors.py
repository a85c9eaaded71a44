"""Where the signal stage runs: inline, a local process pool, or a Dask distributed cluster.

All executors share one interface, ``map_unordered(fn, tasks) -> iterator of results``; outputs are
written by the tasks themselves into the work folder, so results only carry small summaries. Dask is an
optional extra (``pip install 'ecgka[dask]'``), imported only when a Dask executor is created (its workers
must see the ECG root and the output folder, e.g. on a shared file system).
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

from ecgka.errors import ConfigError
from ecgka.processes import signals_held


class InlineExecutor:
    """Runs tasks in this process, in order (workers=1: no start-up cost, easy to profile)."""

    name = "inline"

    def map_unordered(self, fn: Callable, tasks: Iterable[Any]) -> Iterator[Any]:
        for task in tasks:
            yield fn(task)

    def close(self) -> None:
        pass


class ProcessExecutor:
    """A local process pool (spawned workers: safe with the threads of pyarrow and BLAS)."""

    name = "process"

    def __init__(self, workers: int):
        self.pool = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"))

    def map_unordered(self, fn: Callable, tasks: Iterable[Any]) -> Iterator[Any]:
        with signals_held():  # submitting starts the workers (ecgka.processes)
            futures = [self.pool.submit(fn, t) for t in tasks]
        for fut in as_completed(futures):
            yield fut.result()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


DASK_HINT = "--dask-scheduler needs Dask, an optional extra: pip install 'ecgka[dask]'"


def dask_client_class() -> type:
    """``dask.distributed.Client``; without the ``ecgka[dask]`` extra a one-line ConfigError with the hint.

    Every Dask import of the build comes after this one; call it early to fail before any data is read.
    """
    try:
        from dask.distributed import Client
    except ImportError:
        raise ConfigError(DASK_HINT) from None
    return Client


class DaskExecutor:
    """Tasks on a Dask distributed cluster: a scheduler address, or an existing ``Client``."""

    name = "dask"

    def __init__(self, scheduler: Any):
        client_class = dask_client_class()
        self._own = not isinstance(scheduler, client_class)
        try:
            self.client = client_class(scheduler, timeout=30) if self._own else scheduler
        except OSError as exc:
            raise ConfigError(f"cannot connect to the Dask scheduler {scheduler!r}: {exc}") from None

    def map_unordered(self, fn: Callable, tasks: Iterable[Any]) -> Iterator[Any]:
        from dask.distributed import as_completed as dask_completed

        futures = [self.client.submit(fn, t, pure=False) for t in tasks]
        for fut in dask_completed(futures):
            yield fut.result()

    def close(self) -> None:
        if self._own:
            self.client.close()


def default_workers() -> int:
    """The CPUs this process may use."""
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def make_executor(workers: int | None = 1, dask_scheduler: Any = None):
    """Dask when a scheduler (address or Client) is given, else a pool for workers > 1, else inline.

    ``workers=None`` means every CPU this process may use.
    """
    if dask_scheduler is not None:
        return DaskExecutor(dask_scheduler)
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    return ProcessExecutor(workers) if workers > 1 else InlineExecutor()
