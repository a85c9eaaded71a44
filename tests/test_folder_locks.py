"""One writer per folder, with real processes: every command that writes a folder holds its lock for the whole
command (the CLI dispatch, ``writes`` on the options models), the pipeline runner holds the pipeline folder and
each stage's folder; a second writer gets one line naming the holder and exit 75, and the first finishes intact.

The first writer is paused (SIGSTOP) while it holds the lock, so the second always meets it, however fast or
slow the machine is.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from shard_factory import write_dataset

from ecgka.catalog import PipelineDir, RunDir
from ecgka.locks import LOCKED_EXIT, holder

pytestmark = pytest.mark.slow  # real training processes: `make test` runs it, `make test-fast` skips it

REPO = Path(__file__).resolve().parents[1]
FAST = ["model.preset=tiny", "batch_size=32", "progress=false", "threads=1", "tensorboard=false"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
HOLDER = r"is being written by process (\d+) on \S+ since \d{4}-\d\d-\d\dT[\d:.]+Z"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("ds"), n_train=96, n_val=32, n_test=16, n_samples=256)


def _ecgka(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ecgka", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300, env=ENV)


def _start(*args: str, cwd: Path = REPO) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ecgka", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=cwd, env=ENV)


def _wait_for(condition, proc: subprocess.Popen, what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the first writer ended before {what}: {err[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def _training(run: Path) -> bool:
    """The run folder is locked and its run.json says it is training (an unfinished run)."""
    try:
        return holder(run) is not None and json.loads(RunDir(run).run_json.read_text())["status"] == "running"
    except (OSError, ValueError, KeyError):
        return False


def _refused(result: subprocess.CompletedProcess, folder: Path, pid: int) -> str:
    """Exit 75 and one line naming the folder and the holder (its pid, host and since when)."""
    err = result.stderr.strip()
    assert result.returncode == LOCKED_EXIT, result.stderr[-2000:]
    assert "Traceback" not in err and err.count("\n") == 0, err
    assert str(folder) in err and int(re.search(HOLDER, err).group(1)) == pid, err
    return err


def _finish(proc: subprocess.Popen) -> str:
    os.kill(proc.pid, signal.SIGCONT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    return out


def test_a_second_train_or_evaluate_of_a_training_run_is_refused_and_the_run_completes(data_dir, tmp_path):
    """Before: the second `ecgka train` printed "replacing the unfinished run", deleted the live run and both
    exited 0. Now it is refused (75, one line naming the holder), and so is `ecgka evaluate RUN`."""
    run = tmp_path / "run"
    first = _start("train", "--data", str(data_dir), "--out", str(run), *FAST, "epochs=3")
    _wait_for(lambda: _training(run), first, "training started")
    os.kill(first.pid, signal.SIGSTOP)  # holding the lock, mid-run
    try:
        second = _ecgka("train", "--data", str(data_dir), "--out", str(run), *FAST, "epochs=3")
        err = _refused(second, run, first.pid)
        assert "run folder" in err and "replacing" not in second.stderr
        evaluate = _ecgka("evaluate", str(run), "--data", str(data_dir), "device=cpu")
        _refused(evaluate, run, first.pid)
    finally:
        out = _finish(first)
    summary = RunDir(run).read_run()
    assert summary["status"] == "complete" and summary["epochs_done"] == 3
    assert RunDir(run).checkpoint("best").is_file() and holder(run) is None
    assert "trained" in out


def test_a_lock_left_by_a_killed_writer_is_taken_over(data_dir, tmp_path):
    """SIGKILL leaves the lock file but no lock: the next `ecgka train` resumes the run and completes it."""
    run = tmp_path / "run"
    first = _start("train", "--data", str(data_dir), "--out", str(run), *FAST, "epochs=3")
    _wait_for(lambda: _training(run), first, "training started")
    first.kill()
    first.communicate()
    assert (run / ".ecgka-lock").exists() and holder(run) is None
    again = _ecgka("train", "--data", str(data_dir), "--out", str(run), *FAST, "epochs=3")
    assert again.returncode == 0, again.stderr[-2000:]
    assert RunDir(run).read_run()["status"] == "complete"


PIPELINE = """
name: locked
stages:
  - id: run
    kind: train
    data: {data}
    overrides: [{overrides}, epochs=3]
"""


def test_a_second_pipeline_run_into_the_same_folder_is_refused(data_dir, tmp_path):
    """Two `ecgka run` into one pipeline folder: the second is refused (75, one line naming the holder); while
    a stage runs, its folder is locked too (`ecgka train --out OUT/run`); the first run completes, and a
    re-run skips it."""
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(PIPELINE.format(data=data_dir, overrides=", ".join(FAST)))
    out = tmp_path / "out"
    first = _start("run", str(pipeline), "--out", str(out))
    stage = PipelineDir(out).stage_dir("run")
    _wait_for(lambda: _training(stage), first, "the train stage started")
    os.kill(first.pid, signal.SIGSTOP)
    try:
        second = _ecgka("run", str(pipeline), "--out", str(out))
        assert "pipeline folder" in _refused(second, out, first.pid)
        train = _ecgka("train", "--data", str(data_dir), "--out", str(stage), *FAST, "epochs=3")
        _refused(train, stage, first.pid)
    finally:
        out_text = _finish(first)
    assert "1 stage(s) ran" in out_text and re.search(r"\[done\] run in [\d.]+ s: best epoch \d/3: val ", out_text)
    assert RunDir(stage).read_run()["status"] == "complete"
    again = _ecgka("run", str(pipeline), "--out", str(out))
    assert again.returncode == 0 and "0 stage(s) ran, 1 skipped" in again.stdout, again.stderr[-2000:]


@pytest.mark.parametrize("command", ["synth", "build", "train", "evaluate", "report", "export", "age pack",
                                     "age synth"])
def test_every_command_that_writes_a_folder_declares_it(command):
    """The CLI dispatch locks the folder each writing command names (``writes`` on its options model)."""
    import ecgka.cli as cli

    _, info, _ = cli.resolve_command(command.split())
    model = cli.load_command(info).options
    assert model.writes in model.model_fields, command
    assert model.writes_what.endswith("folder")


def test_a_busy_folder_is_refused_before_the_command_runs(tmp_path):
    """In-process: a folder locked by another process refuses `ecgka synth` with exit 75 and one line."""
    holder_code = ("import sys, time\nfrom ecgka.locks import FolderLock\n"
                   "with FolderLock(sys.argv[1], 'stand-in folder'):\n    print('held', flush=True)\n"
                   "    time.sleep(60)\n")
    out = tmp_path / "standin"
    child = subprocess.Popen([sys.executable, "-c", holder_code, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        result = _ecgka("synth", "--out", str(out), "--subjects", "2")
        _refused(result, out, child.pid)
        assert sorted(p.name for p in out.iterdir()) == [".ecgka-lock"]  # nothing written
    finally:
        child.kill()
        child.wait()
