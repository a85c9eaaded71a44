"""Where a pipeline's stages run: in this process one after another, or each in its own process on Dask.

The runner (``ecgka.pipeline.runner``) decides what runs, in which order and with which fingerprint, and
writes every marker and ``log.jsonl`` line itself (one writer); an executor only runs the stages it is
given and says how each ended (:class:`Outcome`). Both executors share one small interface:

- ``capacity``: how many stages may be given before one is waited for (inline: 1, Dask: no limit, its
  scheduler queues them on the workers);
- ``submit(job)``; ``wait()``: the jobs that ended since the last call (at least one);
- ``close()``: stop what still runs (after Ctrl-C or SIGTERM) before the pipeline lock is released.

On Dask each stage is one task, ``run_stage_task``, which starts ``python -m ecgka.pipeline.stage_process``
and waits for it, so a crash or an out-of-memory kill in a stage fails that stage only. A stage kind that
wants a GPU (``StageKind.gpu``) asks for the ``GPU`` worker resource when some worker advertises one (a
worker started with ``--resources GPU=1``): one such stage per GPU worker at a time, its process seeing
that worker's device alone (``CUDA_VISIBLE_DEVICES``). On a cluster without GPU workers every stage takes
one worker slot. Dask is an optional extra (``pip install 'ecgka[dask]'``), imported only here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ecgka.errors import ConfigError, EcgkaError
from ecgka.pipeline.stage_process import execute_stage, task_of
from ecgka.pipeline.stages import StageKind

GPU = "GPU"  # the Dask worker resource a GPU stage asks for
DASK_HINT = "--dask-scheduler and --parallel need Dask, an optional extra: pip install 'ecgka[dask]'"
_STOP_SECONDS = 60.0  # how long a stopped stage process may take to end cleanly before it is killed
# the thread caps a Dask nanny gives its worker processes (one thread each); a stage process gets the job's
# own values back, as this process saw them before any cluster started (a local nanny sets them here too)
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
_JOB_THREADS = {name: os.environ.get(name) for name in _THREAD_VARS}


def utc_now() -> str:
    """Now, UTC, ISO 8601 to the millisecond (``2026-12-03T13:57:27.123Z``)."""
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class StageJob:
    """A stage the runner decided to run: its id, kind, typed and raw resolved options, output folder."""

    stage_id: str
    kind_name: str
    kind: StageKind
    options: Any
    raw: dict[str, Any]
    output: Path
    fresh: bool
    console: Path  # where a stage process's console output goes (``PipelineDir.console``)


@dataclass
class Outcome:
    """How a stage ended: ``exit_code`` 0 when done; ``error`` the one line saying why not."""

    exit_code: int
    start: str
    end: str
    seconds: float  # how long the stage ran (not how long it waited for a worker)
    worker: str
    gpu: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


def first_device(visible: str | None) -> str | None:
    """The device a worker is pinned to: the first of its ``CUDA_VISIBLE_DEVICES`` (dask-cuda rotates the
    list so each worker's own device comes first), None when it sees none."""
    devices = [d.strip() for d in (visible or "").split(",") if d.strip()]
    return devices[0] if devices else None


def stage_env(base: Mapping[str, str], gpu_stage: bool, gpu_worker: bool) -> tuple[dict[str, str], str | None]:
    """(environment of a stage process, the GPU it sees). On a GPU worker a GPU stage sees the worker's
    own device alone and any other stage none (CPU stages take no GPU); elsewhere the environment is kept."""
    env = dict(base)
    if not gpu_worker:
        return env, None
    device = first_device(base.get("CUDA_VISIBLE_DEVICES"))
    if gpu_stage and device is not None:
        env["CUDA_VISIBLE_DEVICES"] = device
        return env, device
    env["CUDA_VISIBLE_DEVICES"] = ""
    return env, None


def exit_reason(exit_code: int, console: str) -> str:
    """Why a stage process failed: its last ``error: ...`` line, else the signal or exit code."""
    for line in reversed(console.splitlines()):
        if line.startswith("error: "):
            return line[len("error: "):].strip()
    if exit_code < 0:
        import signal

        try:
            name = signal.Signals(-exit_code).name
        except ValueError:
            name = f"signal {-exit_code}"
        return f"the stage process was killed by {name}" + (" (out of memory?)" if name == "SIGKILL" else "")
    tail = [line for line in console.splitlines() if line.strip()][-1:]
    return f"the stage process exited with {exit_code}" + (f": {tail[0].strip()}" if tail else "")


# ---- inline: today's sequential run, in this process ------------------------------------------------------------


class InlineExecutor:
    """Each stage in this process, when waited for: the sequential run (``ecgka run`` without --parallel)."""

    capacity = 1
    name = "inline"

    def __init__(self, log: Callable[[str], None] = print):
        self.log = log
        self.queue: list[StageJob] = []

    def submit(self, job: StageJob) -> None:
        self.queue.append(job)

    def wait(self) -> list[tuple[StageJob, Outcome]]:
        job = self.queue.pop(0)
        start, begun, exit_code, error = utc_now(), time.perf_counter(), 0, None
        try:
            execute_stage(job.stage_id, job.kind, job.options, job.output, job.fresh)
        except EcgkaError as exc:
            exit_code, error = exc.exit_code, str(exc)
        except OSError as exc:  # a path that cannot be written (permission, disk full), as the CLI says it
            exit_code, error = 2, str(exc)
        except Exception as exc:  # a bug in a stage: its traceback, then the other stages go on
            self.log("".join(traceback.format_exception(exc)).rstrip())
            exit_code, error = 1, f"{type(exc).__name__}: {exc}"
        gpu = _inline_gpu() if job.kind.gpu else None
        return [(job, Outcome(exit_code, start, utc_now(), time.perf_counter() - begun, self.name, gpu, error))]

    def close(self) -> None:
        self.queue.clear()


def _inline_gpu() -> str | None:
    """The GPU an in-process stage used: its CUDA device when torch is loaded and sees one, else None."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    visible = first_device(os.environ.get("CUDA_VISIBLE_DEVICES"))
    return visible if visible is not None else str(torch.cuda.current_device())


# ---- Dask: each stage a task that runs the stage in its own process ---------------------------------------------


def dask_client_class() -> type:
    """``dask.distributed.Client``; without the ``ecgka[dask]`` extra a one-line ConfigError with the hint."""
    try:
        from dask.distributed import Client
    except ImportError:
        raise ConfigError(DASK_HINT) from None
    return Client


# stage processes running on this worker, by run id and task key (so a stopped run ends its own stages only)
_LIVE: dict[str, dict[str, subprocess.Popen]] = {}
_LIVE_LOCK = threading.Lock()


def _wanted(key: str | None) -> bool:
    """Whether the Dask task ``key`` is still wanted on this worker (its future not released or cancelled)."""
    if key is None:
        return True
    try:
        from distributed import get_worker

        state = get_worker().state.tasks.get(key)
    except (ImportError, ValueError, AttributeError):  # not on a worker (called directly)
        return True
    return state is not None and state.state not in {"cancelled", "released", "forgotten"}


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM a stage process (it ends cleanly: run.json says interrupted), SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(_STOP_SECONDS)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def stop_stages(run_id: str) -> int:
    """End this worker's stage processes of run ``run_id`` (``client.run`` on close); returns how many."""
    with _LIVE_LOCK:
        procs = list(_LIVE.pop(run_id, {}).values())
    for proc in procs:
        _stop(proc)
    return len(procs)


def _worker_name() -> tuple[str, bool]:
    """(this worker's name, whether it advertises a GPU); ("local", False) off a worker."""
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return "local", False
    return str(worker.name), bool((worker.state.total_resources or {}).get(GPU))


def run_stage_task(task: dict[str, Any], console: str, run_id: str) -> dict[str, Any]:
    """The Dask task of one stage: run it in ``python -m ecgka.pipeline.stage_process``, its console output
    in ``console``; returns the :class:`Outcome` fields. Ends the stage process when the task is cancelled."""
    import json

    worker, gpu_worker = _worker_name()
    env, gpu = stage_env(os.environ, bool(task.get("gpu")), gpu_worker)
    for name, value in (task.get("threads") or {}).items():  # the job's thread settings, not the nanny's
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    key = None
    try:
        from distributed import get_worker

        key = get_worker().get_current_task()
    except (ImportError, ValueError, AttributeError):
        pass
    Path(console).parent.mkdir(parents=True, exist_ok=True)
    start, begun = utc_now(), time.perf_counter()
    with open(console, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "ecgka.pipeline.stage_process"], stdin=subprocess.PIPE,
                                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        with _LIVE_LOCK:
            _LIVE.setdefault(run_id, {})[key or str(proc.pid)] = proc
        try:
            assert proc.stdin is not None
            proc.stdin.write(json.dumps({**task, "parent_pid": os.getpid()}).encode())
            proc.stdin.close()
            while True:
                try:
                    proc.wait(1.0)
                    break
                except subprocess.TimeoutExpired:
                    if not _wanted(key):
                        _stop(proc)
                        break
        finally:
            _stop(proc)
            with _LIVE_LOCK:
                _LIVE.get(run_id, {}).pop(key or str(proc.pid), None)
    text = Path(console).read_text(errors="replace")
    code = proc.returncode
    exit_code = code if code >= 0 else 128 - code
    return {"exit_code": exit_code, "start": start, "end": utc_now(), "seconds": time.perf_counter() - begun,
            "worker": worker, "gpu": gpu,
            "error": None if code == 0 else exit_reason(code, text)}


def cluster_has_gpus(client: Any) -> bool:
    """Whether some worker of the cluster advertises the ``GPU`` resource."""
    workers = client.scheduler_info(n_workers=-1).get("workers", {})
    return any((w.get("resources") or {}).get(GPU) for w in workers.values())


class DaskExecutor:
    """Stages as tasks on a Dask cluster: a scheduler address, or a ``Client``/cluster given by the caller."""

    capacity = None
    name = "dask"

    def __init__(self, scheduler: Any, log: Callable[[str], None] = print):
        client_class = dask_client_class()
        self.log = log
        self._own = not isinstance(scheduler, client_class)
        try:
            self.client = client_class(scheduler, timeout=30) if self._own else scheduler
        except OSError as exc:
            raise ConfigError(f"cannot connect to the Dask scheduler {scheduler!r}: {exc}") from None
        if not self.client.scheduler_info(n_workers=-1).get("workers"):  # a Slurm job still in the queue
            log(f"waiting for a Dask worker to join the scheduler at {self.client.scheduler.address} ...")
            self.client.wait_for_workers(1)
        self.gpus = cluster_has_gpus(self.client)
        self.run_id = uuid.uuid4().hex[:12]
        self.futures: dict[Any, StageJob] = {}

    def submit(self, job: StageJob) -> None:
        task = task_of(job.stage_id, job.kind_name, job.kind, job.raw, job.output, job.fresh)
        task["threads"] = _JOB_THREADS
        self.gpus = self.gpus or cluster_has_gpus(self.client)  # GPU workers that joined since
        resources = {GPU: 1} if job.kind.gpu and self.gpus else None
        future = self.client.submit(run_stage_task, task, str(job.console), self.run_id, pure=False,
                                    key=f"stage-{job.stage_id}-{self.run_id}", resources=resources)
        self.futures[future] = job

    def wait(self) -> list[tuple[StageJob, Outcome]]:
        from distributed import wait

        done, _ = wait(list(self.futures), return_when="FIRST_COMPLETED")
        ended = []
        for future in done:
            job = self.futures.pop(future)
            try:
                outcome = Outcome(**future.result())
            except Exception as exc:  # the worker died under the task (KilledWorker), the task was lost
                now = utc_now()
                outcome = Outcome(1, now, now, 0.0, "?", None, f"{type(exc).__name__}: {exc}")
            ended.append((job, outcome))
        return ended

    def close(self) -> None:
        """Cancel what still runs and end its stage processes (they stop cleanly and release their locks)."""
        if self.futures:
            self.client.cancel(list(self.futures))
            try:
                self.client.run(stop_stages, self.run_id)
            except Exception as exc:  # a worker gone already: its stage processes went with it
                self.log(f"stopping the stages: {type(exc).__name__}: {exc}")
            self.futures.clear()
        if self._own:
            self.client.close()

