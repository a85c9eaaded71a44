"""Reading dataset lineage from manifests: a version's line and the chain of parents (``ecgka lineage``).

A version's manifest names its parent (``parent: {path, digest}``); the chain is followed through the
recorded paths. A parent that is gone, or that holds another digest, ends the chain with a line saying so.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ecgka.catalog import DatasetDir
from ecgka.errors import InputError
from ecgka.keys import SPLITS

MAX_DEPTH = 1000  # a cycle of parents (a copied folder) ends here


def _changes(manifest: dict[str, Any]) -> str:
    changes = manifest.get("changes") or {}
    parts = []
    for split in SPLITS:
        c = changes.get(split)
        if c is None:
            parts.append(f"{split} {manifest['counts'][split]}")
        elif manifest.get("parent"):
            parts.append(f"{split} {c['pairs']} (+{c['added']} -{c['removed']} ~{c['changed']}, "
                         f"{c['subjects_new']} new subjects)")
        else:
            parts.append(f"{split} {c['pairs']}")
    return ", ".join(parts)


def version_line(path: Path, manifest: dict[str, Any]) -> str:
    """``digest  date  exports: a, b  train N (+added -removed ~changed, S new subjects), ...  path``."""
    digest = manifest.get("digest") or f"{manifest['fingerprint']} (fingerprint; built without versions)"
    date = manifest.get("created", "?")
    exports = manifest.get("exports") or [{"name": Path(f["path"]).name} for f in manifest["inputs"].get("labs", [])]
    names = ", ".join(e["name"] for e in exports)
    return f"{digest}  {date}  exports: {names}  {_changes(manifest)}  {path}"


def version_summary(manifest: dict[str, Any]) -> str:
    """The build's console lines about its parent and what changed."""
    labs = manifest.get("lab_changes") or {}
    parent = manifest["parent"]
    withdrawn = ", ".join(f"{labs[k]:,} {k}" for k in ("withdrawn_retracted", "withdrawn_hemolysed",
                                                         "withdrawn_invalid_correction") if labs.get(k))
    build = manifest.get("build", {})
    changes = "".join(f"\nconfig: {k}={c['child']} (parent {c['parent']})"
                      for k, c in (manifest.get("config_changes") or {}).items())
    return (f"parent {parent['digest']} ({parent['path']}); labs: {labs.get('added', 0):,} rows added, "
            f"{labs.get('changed', 0):,} corrected, {labs.get('repeated', 0):,} repeated rows counted once"
            f"{', withdrawn: ' + withdrawn if withdrawn else ''}\n"
            f"pairs: {_changes(manifest)}; ECGs reused {build.get('reused', 0):,}, read {build.get('read', 0):,}, "
            f"kept excluded without reading {build.get('not_read', 0):,}{changes}")


def _parent(parent: dict[str, Any]) -> tuple[Path, dict[str, Any] | None, str | None]:
    """The parent's folder, its manifest (None when gone) and a line saying why the chain ends (or None)."""
    path = Path(parent["path"])
    try:
        manifest = DatasetDir(path).read_manifest()
    except InputError:
        return path, None, (f"parent {parent['digest']}: not found at {path} (moved or deleted?); the chain "
                            "stops here")
    found = manifest.get("digest") or manifest.get("fingerprint")
    if found != parent["digest"]:
        return path, None, (f"parent {parent['digest']}: {path} now holds version {found} (replaced?); the "
                            "chain stops here")
    return path, manifest, None


def lineage_lines(dataset: str | Path) -> Iterator[str]:
    """One line per version from ``dataset`` back to the first; a missing parent gives a clear last line."""
    path = Path(dataset)
    manifest = DatasetDir(path).read_manifest()
    for _ in range(MAX_DEPTH):
        yield version_line(path, manifest)
        parent = manifest.get("parent")
        if not parent:
            return
        path, manifest, stop = _parent(parent)
        if stop:
            yield stop
            return
    yield f"stopped after {MAX_DEPTH} versions (a cycle of parents?)"
