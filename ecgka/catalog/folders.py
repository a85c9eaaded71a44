"""Who may write into a folder: the folder marker and the one rule every command follows.

Every folder ecgka writes (dataset, run, report, pipeline, stand-in) carries ``FOLDER_MARKER``
(``{"kind", "ecgka_version", "created", "content"}``). A command writes only into a missing folder, an
empty folder, or a folder whose marker names the command's kind; anything else is refused with one line
and nothing is written (a folder without a marker is not ecgka's). Whether a folder of the same kind holds *the same content* is the command's decision (:meth:`Claim.check_replace` compares the
marker's ``content`` key); replacing other content needs ``force``. docs/build.md lists the rule per kind.
"""

from __future__ import annotations

import enum
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ecgka.errors import InputError
from ecgka.locks import LOCK_FILE

FOLDER_MARKER = ".ecgka-folder.json"


class FolderKind(str, enum.Enum):
    DATASET = "dataset"
    RUN = "run"
    REPORT = "report"
    PIPELINE = "pipeline"
    STANDIN = "stand-in"
    REGISTRY = "registry"
    EXPORT = "export"
    COMPARISON = "comparison"
    AGE_IMAGES = "age-images"  # ecgka age pack
    AGE_STANDIN = "age-stand-in"  # ecgka age synth / synth-age

    def __str__(self) -> str:
        return self.value


class ClaimState(str, enum.Enum):
    NEW = "new"  # missing or empty
    SAME_KIND = "same_kind"  # its marker names this kind


@dataclass(frozen=True)
class Claim:
    """The right to write ``path`` as a ``kind`` folder (from :func:`claim_folder`)."""

    path: Path
    kind: FolderKind
    state: ClaimState
    marker: dict[str, Any] = field(default_factory=dict)

    @property
    def content(self) -> str | None:
        """What the folder holds now, as its marker says (a fingerprint or hash; None when unknown)."""
        return self.marker.get("content")

    def check_replace(self, content: str | None, *, force: bool, what: str | None = None) -> bool:
        """True when the folder holds other content of this kind and ``force`` allows replacing it;
        False when it is new or holds the same (or unknown) content; InputError without ``force``."""
        if self.state is ClaimState.NEW or self.content is None or self.content == content:
            return False
        if not force:
            held = what or f"{self.kind} {self.content}"
            raise InputError(f"{self.path}: holds {held}, not this {self.kind} ({content}); pass --force to "
                             f"replace it, or choose another --out")
        return True

    def write_marker(self, content: str | None = None, root: Path | None = None) -> Path:
        """Write the marker into ``root`` (default: the claimed folder; a temporary twin when written
        atomically)."""
        from ecgka import __version__
        from ecgka.io import atomic_write_json, utc_now

        path = Path(root or self.path) / FOLDER_MARKER
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, {"kind": self.kind.value, "ecgka_version": __version__, "created": utc_now(),
                                 "content": content})
        return path

    def clear(self) -> None:
        """Empty the folder (a replaced folder of this kind keeps no stale cache, variant or work file)."""
        for entry in _entries(self.path):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()


def read_marker(path: str | Path) -> dict[str, Any] | None:
    """The folder's marker, None when it has none; an unreadable one is a one-line InputError."""
    marker = Path(path) / FOLDER_MARKER
    if not marker.is_file():
        return None
    try:
        data = json.loads(marker.read_text())
        FolderKind(data["kind"])
    except (OSError, ValueError, KeyError, TypeError):
        raise InputError(f"{marker}: unreadable folder marker; remove the folder or choose another --out") from None
    return data


def folder_kind(path: str | Path) -> FolderKind | None:
    """The kind of an ecgka folder (its marker), None for any other folder."""
    marker = read_marker(path)
    return FolderKind(marker["kind"]) if marker is not None else None


def _check_place(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise InputError(f"{path}: is a file, not a folder (choose a folder for --out)")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"{parent}: is a file, cannot create {path} below it (choose another --out)")


def _entries(path: Path) -> list[Path]:
    """What a folder holds, its write lock aside (the lock of the command writing it: ``ecgka.locks``)."""
    return [p for p in path.iterdir() if p.name != LOCK_FILE] if path.is_dir() else []


def claim_folder(path: str | Path, kind: FolderKind, *, option: str = "--out") -> Claim:
    """Check that ``kind`` output may go to ``path`` (missing, empty, or an ecgka ``kind`` folder); nothing
    is written. Any other folder or a file is a one-line InputError naming what it is and what to do."""
    path = Path(path)
    _check_place(path)
    if not _entries(path):
        return Claim(path, kind, ClaimState.NEW)
    marker = read_marker(path)
    found = FolderKind(marker["kind"]) if marker else None
    if found is None:
        example = sorted(p.name for p in _entries(path))[0]
        raise InputError(f"{path}: folder is not empty and was not written by ecgka (it holds {example!r}); "
                         f"choose a new or empty folder for {option}")
    if found is not kind:
        raise InputError(f"{path}: is an ecgka {found} folder, not a {kind} folder; choose another {option}")
    return Claim(path, kind, ClaimState.SAME_KIND, marker)
