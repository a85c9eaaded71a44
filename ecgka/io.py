"""Atomic writes, input fingerprints and timestamps: nothing a stage writes is visible before it is complete.

Every time ecgka writes (``log.jsonl``, ``run.json``, manifests, folder markers, the registry log) is
:func:`utc_now`: ISO 8601, UTC, seconds, a trailing ``Z``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# the write lock file inside a folder (``ecgka.locks``); named here because a whole-folder swap carries it
LOCK_FILE = ".ecgka-lock"


def _temp_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling path to write; rename it onto ``path`` only if the block succeeds.

    Works for files and for directories (the whole directory appears at once).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_sibling(path)
    try:
        yield tmp
        if path.is_dir() and tmp.is_dir():
            _carry_lock(path, tmp)
            old = _temp_sibling(path)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def _carry_lock(old: Path, new: Path) -> None:
    """Move the folder's write lock file into its replacement: the holder's open lock goes with it, so
    the swapped-in folder is still locked (``ecgka.locks``)."""
    if (old / LOCK_FILE).exists() and not (new / LOCK_FILE).exists():
        os.replace(old / LOCK_FILE, new / LOCK_FILE)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def utc_now() -> str:
    r"""The current time as ecgka writes it: ISO 8601, UTC, seconds, trailing ``Z``.

    >>> import re
    >>> bool(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", utc_now()))
    True
    """
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, streamed in 1 MiB chunks (bounded memory for multi-GB lab exports).

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     p = Path(d) / "x"
    ...     _ = p.write_bytes(b"abc")
    ...     sha256_file(p)[:16]
    'ba7816bf8f01cfea'
    """
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def file_fingerprint(path: str | Path) -> dict[str, Any]:
    """Path, size and SHA-256 of a file (:func:`sha256_file`)."""
    path = Path(path)
    return {"path": str(path), "size": path.stat().st_size, "sha256": sha256_file(path)}


def remove_stale_temps(directory: str | Path) -> int:
    """Delete leftovers of interrupted atomic writes (``.name.tmp-*``) in ``directory``."""
    removed = 0
    directory = Path(directory)
    if not directory.is_dir():
        return 0
    for leftover in directory.glob(".*.tmp-*"):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
        removed += 1
    return removed
