"""One writer per folder: an OS file lock (``fcntl.flock``) on a lock file inside the folder.

The kernel releases the lock when its holder exits, however it exits (crash, SIGKILL), so a lock left
by a dead process is simply taken by the next writer. While held, the lock file names its holder (pid,
host, since when, command), which a refused writer prints in its one line. Locks are re-entrant within
one process (a pipeline stage that calls another locked function on the same folder), and a held lock
is always the same lock whatever the spelling of the folder's path.

>>> import tempfile
>>> folder = tempfile.mkdtemp()
>>> with FolderLock(folder, "run folder"):
...     holder(folder)["pid"] == os.getpid()
True
>>> holder(folder) is None
True
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ecgka.errors import EcgkaError, InputError
from ecgka.io import LOCK_FILE, utc_now

# exit code of a command refused because another process writes the same folder
LOCKED_EXIT = 75  # EX_TEMPFAIL: try again when the other writer has finished

# resolved folder -> [open lock file, depth, whether the lock created the folder] for the locks held here
_HELD: dict[Path, list[Any]] = {}


class FolderLockedError(EcgkaError):
    """Another live process holds the folder's lock."""

    exit_code = LOCKED_EXIT


def lock_path(folder: str | Path) -> Path:
    return Path(folder) / LOCK_FILE


def holder(folder: str | Path) -> dict[str, Any] | None:
    """Who holds the folder's lock now (pid, host, since, command), or None when nobody does."""
    path = lock_path(folder)
    try:
        with open(path, "rb") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return _read_holder(path) or {"pid": None, "host": None, "since": None, "command": None}
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    except FileNotFoundError:
        pass
    return None


def _read_holder(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8") or "null")
    except (OSError, ValueError):
        return None


def _describe(info: dict[str, Any] | None) -> str:
    if not info or info.get("pid") is None:
        return "another process"
    return f"process {info['pid']} on {info.get('host')} since {info.get('since')} ({info.get('command')})"


class FolderLock:
    """``with FolderLock(folder, what):`` holds the folder's write lock; a second writer is refused.

    ``wait`` seconds: how long to wait for the holder to finish before refusing (0: refuse at once).
    """

    def __init__(self, folder: str | Path, what: str = "folder", wait: float = 0.0):
        self.folder = Path(folder)
        self.what = what
        self.wait = wait
        self._key: Path | None = None

    def acquire(self) -> FolderLock:
        created = not self.folder.exists()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except PermissionError:
            raise InputError(f"{self.folder}: not writable by this user (cannot create it); choose another "
                             f"folder") from None
        key = self.folder.resolve()
        if key in _HELD:
            _HELD[key][1] += 1
            self._key = key
            return self
        deadline = time.monotonic() + self.wait
        while True:
            try:
                handle = open(lock_path(key), "a+b")  # noqa: SIM115 - held until release()
            except FileNotFoundError:  # the previous holder removed the folder it had created
                key.mkdir(parents=True, exist_ok=True)
                continue
            except PermissionError:
                raise InputError(f"{self.folder}: not writable by this user; choose another folder") from None
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                if time.monotonic() >= deadline:
                    self._remove_if_created(key, created)
                    raise FolderLockedError(
                        f"{self.folder}: {self.what} is being written by {_describe(_read_holder(lock_path(key)))}; "
                        f"wait for it to finish (a lock left by a process that died is taken over)") from None
                time.sleep(0.05)
                continue
            if _same_file(handle, lock_path(key)):
                break
            handle.close()  # the holder removed the lock file as we took its lock: take the new one
        _write_holder(handle)
        _HELD[key] = [handle, 1, created]
        self._key = key
        return self

    def release(self) -> None:
        """Remove the lock file (still holding it: a waiting writer then takes a new one), and the folder
        when this lock created it and nothing was written; then unlock."""
        key, self._key = self._key, None
        if key is None or key not in _HELD:
            return
        _HELD[key][1] -= 1
        if _HELD[key][1] > 0:
            return
        handle, _, created = _HELD.pop(key)
        with contextlib.suppress(OSError):
            if _same_file(handle, lock_path(key)):
                os.unlink(lock_path(key))
        self._remove_if_created(key, created)
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        handle.close()

    @staticmethod
    def _remove_if_created(folder: Path, created: bool) -> None:
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty: a refused or failed command leaves no folder behind

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _same_file(handle: Any, path: Path) -> bool:
    """Whether ``path`` is still the file ``handle`` has open (not removed or replaced meanwhile)."""
    try:
        return os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
    except FileNotFoundError:
        return False


def _write_holder(handle: Any) -> None:
    info = {"pid": os.getpid(), "host": socket.gethostname(),
            "since": utc_now(),
            "command": " ".join(["ecgka", *sys.argv[1:3]]) if sys.argv else "ecgka"}
    handle.seek(0)
    handle.truncate(0)
    handle.write(json.dumps(info).encode("utf-8"))
    handle.flush()


@contextlib.contextmanager
def folder_lock(folder: str | Path, what: str = "folder", wait: float = 0.0) -> Iterator[FolderLock]:
    """Function form of :class:`FolderLock`."""
    with FolderLock(folder, what, wait) as lock:
        yield lock


def is_held_here(folder: str | Path) -> bool:
    """Whether this process holds the folder's lock."""
    return Path(folder).resolve() in _HELD
