"""The signal stage on a real Dask cluster: a scheduler and two worker processes on 127.0.0.1, started with
the ``dask scheduler`` / ``dask worker`` commands, driven through ``ecgka build --dask-scheduler``. The shards
must be byte-identical to a local build; every process started here is stopped, also on failure."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ecgka.catalog import DatasetDir
from ecgka.cli import main
from ecgka.keys import SPLITS

pytestmark = pytest.mark.slow  # end to end: `make test` runs it, `make test-fast` skips it

distributed = pytest.importorskip("distributed")
DASK = Path(sys.executable).parent / "dask"
ARGS = ["--quiet", "split.per_bin_cap=4", "shards.chunk_records=8", "shards.row_group_rows=16", "shards.part_rows=32"]


def _start(cmd: list[str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as fh:  # its own process group: killed whole, with any child (nanny -> worker)
        return subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _wait_for(path: Path, procs: list[subprocess.Popen], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not path.is_file():
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            raise RuntimeError(f"the Dask scheduler did not start (see {path.parent})")
        time.sleep(0.1)


def _shards(out: Path) -> dict[str, bytes]:
    ds = DatasetDir(out)
    paths = [p for s in SPLITS for p in ds.shards(s)] + [ds.exclusions_path]
    return {str(p.relative_to(out)): p.read_bytes() for p in paths}


@pytest.mark.skipif(not DASK.is_file(), reason="the `dask` command of the ecgka[dask] extra is not installed")
def test_two_worker_processes_build_byte_identical_shards(tmp_path):
    from ecgka.standin import ECG_DIR, HOSP_DIR, LABEVENTS, generate_standin

    standin = tmp_path / "mimic"
    generate_standin(standin, subjects=24, seed=5, workers=1)
    inputs = ["--ecg-root", str(standin / ECG_DIR), "--labs", str(standin / HOSP_DIR / LABEVENTS)]
    assert main(["build", *inputs, "--out", str(tmp_path / "local"), "--workers", "1", *ARGS]) == 0
    sched_file = tmp_path / "scheduler.json"
    procs = [_start([str(DASK), "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                     "--scheduler-file", str(sched_file)], tmp_path / "scheduler.log")]
    try:
        _wait_for(sched_file, procs)
        for k in range(2):
            procs.append(_start([str(DASK), "worker", "--scheduler-file", str(sched_file), "--host", "127.0.0.1",
                                 "--nthreads", "1", "--no-dashboard", "--name", f"w{k}"], tmp_path / f"worker{k}.log"))
        with distributed.Client(scheduler_file=str(sched_file), timeout=30) as client:
            client.wait_for_workers(2, timeout=60)
            address = client.scheduler.address
            assert main(["build", *inputs, "--out", str(tmp_path / "dask"), "--dask-scheduler", address, *ARGS]) == 0
            executed = client.run(lambda dask_worker: dask_worker.state.executed_count)
        assert len(executed) == 2 and all(n >= 1 for n in executed.values()), executed  # both got chunks
    finally:
        _stop(procs)
    assert all(p.poll() is not None for p in procs)
    manifest = DatasetDir(tmp_path / "dask").read_manifest()
    assert manifest["counts"]["train"] > 0
    assert _shards(tmp_path / "dask") == _shards(tmp_path / "local")
