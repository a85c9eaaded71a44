"""One writer per folder, with real processes: refused while held, taken over after the holder dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ecgka.locks import LOCKED_EXIT, FolderLock, FolderLockedError, holder, is_held_here

HOLD = """
import sys, time
from ecgka.locks import FolderLock
with FolderLock(sys.argv[1], "run folder"):
    print("held", flush=True)
    time.sleep(60)
"""


def _hold_in_child(folder: Path) -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    return child


def test_a_second_writer_is_refused_with_the_holder_and_takes_over_after_a_crash(tmp_path: Path):
    folder = tmp_path / "run"
    child = _hold_in_child(folder)
    try:
        with pytest.raises(FolderLockedError, match=rf"process {child.pid} on .* since .*Z") as refused:
            FolderLock(folder, "run folder").acquire()
        assert refused.value.exit_code == LOCKED_EXIT and "\n" not in str(refused.value)
        assert holder(folder)["pid"] == child.pid
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    # the kernel released the dead holder's lock: the next writer takes it at once
    with FolderLock(folder, "run folder"):
        assert holder(folder)["pid"] == os.getpid()
    assert holder(folder) is None


def test_waiting_writer_gets_the_lock_when_the_holder_finishes(tmp_path: Path):
    child = _hold_in_child(tmp_path)
    started = time.monotonic()
    subprocess.Popen(["sh", "-c", f"sleep 0.5; kill {child.pid}"])
    with FolderLock(tmp_path, wait=30):
        assert time.monotonic() - started < 30
    child.wait()


def test_reentrant_in_one_process_and_the_same_lock_whatever_the_spelling(tmp_path: Path, monkeypatch):
    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    monkeypatch.chdir(tmp_path)
    with FolderLock("real"):
        with FolderLock(tmp_path / "alias"):  # the same folder, spelled another way: the same lock
            assert is_held_here(tmp_path / "real")
        assert is_held_here("real")
    assert not is_held_here("real")


def test_two_writers_in_separate_processes_never_overlap(tmp_path: Path):
    """Eight processes append start/end marks under the lock: no two critical sections interleave."""
    script = """
import os, sys, time
from ecgka.locks import FolderLock
with FolderLock(sys.argv[1], wait=60):
    with open(sys.argv[2], "a") as f:
        f.write(f"start {os.getpid()}\\n"); f.flush(); time.sleep(0.05); f.write(f"end {os.getpid()}\\n")
"""
    log = tmp_path / "log.txt"
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "f"), str(log)]) for _ in range(8)]
    assert all(p.wait() == 0 for p in procs)
    lines = log.read_text().split()
    marks = list(zip(lines[0::2], lines[1::2], strict=True))
    assert len(marks) == 16
    for (kind_a, pid_a), (kind_b, pid_b) in zip(marks[0::2], marks[1::2], strict=True):
        assert (kind_a, kind_b) == ("start", "end") and pid_a == pid_b


def test_a_whole_folder_swap_keeps_the_folder_locked(tmp_path: Path):
    """A command that writes its folder atomically (a temporary twin renamed over it) keeps its lock."""
    from ecgka.catalog import FolderKind, claim_folder
    from ecgka.io import atomic_path

    out = tmp_path / "report"
    with FolderLock(out, "report folder"):
        assert claim_folder(out, FolderKind.REPORT).state.value == "new"  # the lock file alone is empty
        with atomic_path(out) as tmp:
            tmp.mkdir()
            (tmp / "report.html").write_text("x")
        child = subprocess.run([sys.executable, "-c", "import sys; from ecgka.locks import FolderLock; "
                                "FolderLock(sys.argv[1]).acquire()", str(out)], capture_output=True, text=True)
        assert child.returncode != 0 and "is being written by process" in child.stderr
    assert sorted(p.name for p in out.iterdir()) == ["report.html"]  # the lock file goes with the lock


def test_a_refused_writer_leaves_nothing_and_a_released_lock_no_file(tmp_path: Path):
    folder = tmp_path / "new"
    child = _hold_in_child(folder)
    try:
        with pytest.raises(FolderLockedError):
            FolderLock(folder).acquire()
        assert [p.name for p in folder.iterdir()] == [".ecgka-lock"]  # the holder's, nothing of ours
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    with FolderLock(tmp_path / "made"):
        assert (tmp_path / "made").is_dir()
    assert not (tmp_path / "made").exists()  # created by the lock, nothing written: removed again
    (tmp_path / "kept").mkdir()
    with FolderLock(tmp_path / "kept"):
        (tmp_path / "kept" / "out.txt").write_text("x")
    assert [p.name for p in (tmp_path / "kept").iterdir()] == ["out.txt"]

