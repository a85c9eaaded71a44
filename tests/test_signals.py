"""SIGTERM (what Slurm, Kubernetes and ``kill`` send) stops a command like Ctrl-C: at a safe point, recording
``interrupted``, removing temporary files, exiting 143 (130 for SIGINT); the same command then resumes.
Real processes, real signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from shard_factory import write_dataset

pytestmark = pytest.mark.slow  # real processes: `make test` runs them, `make test-fast` skips them

REPO = Path(__file__).resolve().parents[1]
FAST = ["model.preset=tiny", "batch_size=32", "progress=false", "threads=1", "tensorboard=false"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("ds"), n_train=2048, n_val=32, n_test=16, n_samples=256)


def _start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ecgka", *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)


def _wait_for(condition, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, f"ended before the signal: {proc.communicate()[1][-2000:]}"


def _status(run: Path) -> dict:
    return json.loads((run / "run.json").read_text())


@pytest.mark.parametrize(("sig", "code", "word"), [(signal.SIGTERM, 143, "terminated (SIGTERM)"),
                                                   (signal.SIGINT, 130, "interrupted")])
def test_train_stopped_by_a_signal_records_interrupted_and_resumes(data_dir, tmp_path, sig, code, word):
    run = tmp_path / "r"
    args = ["train", "--data", str(data_dir), "--out", str(run), *FAST, "epochs=5"]  # epochs of ~1 s: the signal comes after the first
    proc = _start(*args)
    _wait_for(lambda: (run / "log.jsonl").is_file(), proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err[-2000:]
    assert "Traceback" not in err and out == ""
    assert err.strip().splitlines()[-1] == (f"ecgka train: {word}; {run} keeps its last saved epoch: resume with "
                                            "the same command")
    info = _status(run)
    assert info["status"] == "interrupted"
    assert info["error"]["message"] == "interrupted; resume with the same command"
    assert not [p for p in run.rglob("*") if ".tmp-" in p.name], "no temporary file is left"
    res = subprocess.run([sys.executable, "-m", "ecgka", *args], cwd=REPO, capture_output=True, text=True, env=ENV,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "resuming from epoch" in res.stderr
    assert _status(run)["status"] == "complete"


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_synth_stopped_by_a_signal_leaves_no_temporary_folder_and_reruns(tmp_path, sig, code):
    out = tmp_path / "standin"
    args = ["synth", "--out", str(out), "--subjects", "1500", "--workers", "2"]
    proc = _start(*args)
    _wait_for(lambda: any(p.name.startswith(".standin.tmp-") and (p / "ecg").exists()
                          for p in tmp_path.iterdir()), proc)
    time.sleep(0.5)  # inside the ECG stage
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-2000:]
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == f"ecgka synth: {'terminated (SIGTERM)' if code == 143 else 'interrupted'}"
    assert list(tmp_path.iterdir()) == [], "neither the stand-in nor its temporary folder is left"
    res = subprocess.run([sys.executable, "-m", "ecgka", "synth", "--out", str(out), "--subjects", "20"], cwd=REPO,
                         capture_output=True, text=True, env=ENV, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert (out / "ecg" / "record_list.csv").is_file()


class _Stopped(Exception):
    pass


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_a_pool_starts_its_workers_is_delivered_after(sig):
    """``ecgka.processes.signals_held``: a signal that comes while a pool starts its workers does not interrupt the
    start (a half-written start-up pipe kills the worker with a traceback); it reaches the handler in place as
    soon as the block ends, and the handlers are as before."""
    from ecgka.processes import signals_held

    def stop(signum, frame):
        raise _Stopped(signum)

    before = signal.signal(sig, stop)
    try:
        steps = []
        with pytest.raises(_Stopped) as stopped:
            with signals_held():
                os.kill(os.getpid(), sig)
                time.sleep(0.05)  # the handler would have run by now
                steps.append("the block ran to its end")
        assert steps == ["the block ran to its end"] and stopped.value.args == (sig,)
        assert signal.getsignal(sig) is stop
        with signals_held():  # no signal: nothing raised
            steps.append("again")
        assert steps[-1] == "again"
    finally:
        signal.signal(sig, before)
