"""Resume: a run killed with SIGKILL and re-started ends with bit-identical weights to an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from shard_factory import write_dataset

pytestmark = pytest.mark.slow  # end to end: `make test` runs it, `make test-fast` skips it

REPO = Path(__file__).resolve().parents[1]
ARGS = ["model.preset=tiny", "batch_size=32", "progress=false", "threads=1", "epochs=16"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("ds"), n_train=192, n_val=32, n_test=16, n_samples=256)


def _cmd(data_dir: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "ecgka", "train", "--data", str(data_dir), "--out", str(out), *ARGS, *extra]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def _kill_after(cmd: list[str], ready) -> int:
    """Start ``cmd``, SIGKILL it as soon as ``ready()`` holds; return how many polls it took."""
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not ready() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        assert proc.poll() is None, "the run finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    return proc.returncode


def _run(cmd: list[str]) -> None:
    res = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]


def _weights(run: Path, name: str = "last") -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / f"{name}.pt", weights_only=True)["model"]


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs"


@pytest.fixture(scope="module")
def uninterrupted(data_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("ref") / "run"
    _run(_cmd(data_dir, run, "method.name=fds"))
    return run


@pytest.mark.slow
def test_killed_after_an_epoch_checkpoint_resumes_bit_identically(data_dir, uninterrupted, tmp_path):
    run = tmp_path / "run"
    log = run / "log.jsonl"
    code = _kill_after(_cmd(data_dir, run, "method.name=fds"),
                       lambda: log.is_file() and len(log.read_text().splitlines()) >= 2)
    assert code == -signal.SIGKILL
    assert json.loads((run / "run.json").read_text())["status"] == "running"
    done = len(log.read_text().splitlines())
    assert 2 <= done < 16
    _run(_cmd(data_dir, run, "method.name=fds"))
    _assert_same(_weights(run), _weights(uninterrupted))
    _assert_same(_weights(run, "best"), _weights(uninterrupted, "best"))
    ref_log = [json.loads(x) for x in (uninterrupted / "log.jsonl").read_text().splitlines()]
    new_log = [json.loads(x) for x in log.read_text().splitlines()]
    assert [r["train_loss"] for r in new_log] == [r["train_loss"] for r in ref_log]
    assert json.loads((run / "run.json").read_text())["status"] == "complete"


@pytest.mark.slow
def test_killed_mid_epoch_resumes_from_a_step_checkpoint(data_dir, tmp_path):
    ref, run = tmp_path / "ref", tmp_path / "run"
    extra = ("checkpoint_every_steps=2", "method.name=vanilla", "epochs=3")
    _run(_cmd(data_dir, ref, *extra))

    def mid_epoch() -> bool:
        try:
            state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
        except Exception:  # not written yet (atomic rename: never half-written)
            return False
        return state["epoch"] >= 1 and state["step"] > 0

    _kill_after(_cmd(data_dir, run, *extra), mid_epoch)
    _run(_cmd(data_dir, run, *extra))
    _assert_same(_weights(run), _weights(ref))
