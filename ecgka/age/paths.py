"""Paths read from a CSV are untrusted: they must stay inside their image root."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from ecgka.errors import InputError


def safe_join(root: Path, rel: str, *, where: str = "path") -> Path:
    """``root / rel``, refusing absolute paths, ``..`` parts and symlinks that resolve outside ``root``."""
    text = str(rel)
    parts = PurePosixPath(text.replace("\\", "/")).parts
    if not text or text.startswith(("/", "\\")) or (parts and ":" in parts[0]) or ".." in parts:
        raise InputError(f"{where}: {text!r} is not a relative path inside the image root")
    path = Path(root, *parts)
    real_root = Path(root).resolve()
    if path.exists() and not path.resolve().is_relative_to(real_root):
        raise InputError(f"{where}: {text!r} resolves outside the image root {root}")
    return path
