"""The Dask clusters a pipeline runs on: a local one for ``--parallel N``, a Slurm one from a shipped config.

``--parallel N`` on a machine without GPUs starts N worker processes of one thread each (every stage takes
one worker). On a machine with visible GPUs (``CUDA_VISIBLE_DEVICES``, else ``nvidia-smi -L``) the first
min(N, GPUs) workers are each pinned to one GPU (their ``CUDA_VISIBLE_DEVICES`` is that device, they
advertise ``GPU=1``) and the rest, if any, are CPU workers: at most one GPU stage per GPU, CPU stages on
whichever worker is free. The workers are plain ``distributed`` nannies with their own environment rather
than dask-cuda's ``LocalCUDACluster``: a stage runs in its own process, so a worker needs no CUDA context,
memory pool or UCX, and one code path serves every machine (``worker_specs`` is a pure function).

On Slurm (``dask-jobqueue``) each job is one worker with one GPU; ``slurm_cluster`` builds the cluster from
a YAML of ``SLURMCluster`` keyword arguments (``ecgka/resources/clusters/slurm_gpu.yaml``, see
docs/pipelines.md) and ``cluster.scale(jobs=N)`` asks for N GPUs.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ecgka.config import read_yaml
from ecgka.errors import ConfigError
from ecgka.pipeline.executors import DASK_HINT, GPU

JOBQUEUE_HINT = "a Slurm cluster needs dask-jobqueue, an optional extra: pip install 'ecgka[cluster]'"
SLURM_EXAMPLE = "clusters/slurm_gpu.yaml"  # shipped under ecgka/resources


@dataclass(frozen=True)
class WorkerSpec:
    """One worker process of a local cluster: its name, its environment, its Dask resources."""

    name: str
    env: dict[str, str] = field(default_factory=dict)
    resources: dict[str, float] = field(default_factory=dict)


def worker_specs(n: int, devices: list[str]) -> list[WorkerSpec]:
    """``n`` workers; the first min(n, len(devices)) pinned to one GPU each (``gpu<device>``), the others
    CPU workers (``cpu<i>``) that see no GPU when the machine has some."""
    if n < 1:
        raise ConfigError(f"--parallel must be >= 1, got {n}")
    gpus = [WorkerSpec(f"gpu{d}", {"CUDA_VISIBLE_DEVICES": d}, {GPU: 1}) for d in devices[:n]]
    cpu_env = {"CUDA_VISIBLE_DEVICES": ""} if devices else {}
    return gpus + [WorkerSpec(f"cpu{i}", dict(cpu_env)) for i in range(n - len(gpus))]


def visible_gpus(environ: dict[str, str] | None = None) -> list[str]:
    """The GPUs this process may use: ``CUDA_VISIBLE_DEVICES`` when set (``""``: none), else those
    ``nvidia-smi -L`` lists, else none. Without importing torch (no CUDA context in the driver)."""
    env = os.environ if environ is None else environ
    if "CUDA_VISIBLE_DEVICES" in env:
        return [d.strip() for d in env["CUDA_VISIBLE_DEVICES"].split(",") if d.strip() and d.strip() != "-1"]
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        listing = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(line for line in listing.splitlines() if line.startswith("GPU "))]


def local_cluster(n: int, devices: list[str] | None = None) -> Any:
    """A local Dask cluster of ``n`` one-thread worker processes (:func:`worker_specs`), to ``close()``."""
    try:
        from distributed import Nanny, Scheduler, SpecCluster
    except ImportError:
        raise ConfigError(DASK_HINT) from None
    specs = worker_specs(n, visible_gpus() if devices is None else devices)
    workers = {s.name: {"cls": Nanny, "options": {"nthreads": 1, "name": s.name, "env": s.env,
                                                  "resources": s.resources, "dashboard": False,
                                                  "silence_logs": logging.ERROR}} for s in specs}
    scheduler = {"cls": Scheduler, "options": {"dashboard": False, "host": "127.0.0.1"}}
    return SpecCluster(workers=workers, scheduler=scheduler, silence_logs=logging.ERROR, name="ecgka-pipeline")


def slurm_cluster(config: str | Path | None = None, **overrides: Any) -> Any:
    """A ``dask_jobqueue.SLURMCluster`` from a YAML of its keyword arguments (default: the shipped
    ``clusters/slurm_gpu.yaml``, one GPU per job); no job starts until ``cluster.scale(...)``."""
    from ecgka.resources import RESOURCES

    path = Path(config) if config is not None else RESOURCES / SLURM_EXAMPLE
    if not path.is_file():
        raise ConfigError(f"{config or SLURM_EXAMPLE}: no such cluster config")
    kwargs = read_yaml(path)
    if not isinstance(kwargs, dict):
        raise ConfigError(f"{path}: expected a mapping of SLURMCluster keyword arguments")
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError:
        raise ConfigError(JOBQUEUE_HINT) from None
    try:
        return SLURMCluster(**{**kwargs, **overrides})
    except (TypeError, ValueError) as exc:  # an unknown keyword, a bad memory or walltime
        raise ConfigError(f"{path}: {str(exc).splitlines()[0]}") from None
