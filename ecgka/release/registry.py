"""The model registry: a folder of plain files (``ecgka.catalog.RegistryDir``) that any tool can read.

Each version records its run folder and a copy of its TorchScript export, the dataset it was trained on
(fingerprint and digest), its config, its metrics on its own test split, its parent version and a time.
``aliases.json`` maps ``champion`` / ``challenger`` to versions; ``log.jsonl`` is append-only and records
every registration, alias change, promotion and refusal with its reasons.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ecgka.catalog import ClaimState, FolderKind, RegistryDir, RunDir, claim_folder, resolve_weights
from ecgka.errors import InputError
from ecgka.io import atomic_write_json, read_json, sha256_file, utc_now

ALIASES = ("champion", "challenger")


def _summary(metrics: dict) -> dict:
    """metrics.json without its figure aggregates (kept small in model.json)."""
    return {k: v for k, v in metrics.items() if k != "figures"}


class ModelRegistry:
    """Read and change a registry folder (created on first registration)."""

    def __init__(self, path: str | Path):
        self.dir = RegistryDir(path)

    @property
    def path(self) -> Path:
        return self.dir.path

    def aliases(self) -> dict[str, str]:
        return read_json(self.dir.aliases_path) if self.dir.aliases_path.is_file() else {}

    def versions(self) -> list[str]:
        return self.dir.version_names()

    def record(self, version: str) -> dict[str, Any]:
        path = self.dir.model_json(version)
        if not path.is_file():
            raise InputError(f"{self.path}: no model version {version!r} (has {', '.join(self.versions()) or 'none'})")
        return read_json(path)

    def resolve(self, selector: str) -> str:
        """A version name from an alias (``champion``), ``v3`` or ``v0003``."""
        aliases = self.aliases()
        if selector in aliases:
            return aliases[selector]
        if selector in ALIASES:
            raise InputError(f"{self.path}: no {selector} yet (register and promote a model first)")
        if selector.startswith("v") and selector[1:].isdigit():
            name = RegistryDir.version_name(int(selector[1:]))
            self.record(name)
            return name
        raise InputError(f"{self.path}@{selector}: not an alias ({', '.join(ALIASES)}) or a version (v1, v0001)")

    def log(self, event: str, **fields: Any) -> dict[str, Any]:
        """Append one event to log.jsonl (append-only, flushed to disk)."""
        entry = {"time": utc_now(), "event": event, **fields}
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.dir.log_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry, sort_keys=False, default=str) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        return entry

    def read_log(self) -> list[dict[str, Any]]:
        if not self.dir.log_path.is_file():
            return []
        return [json.loads(line) for line in self.dir.log_path.read_text().splitlines() if line.strip()]

    def set_alias(self, alias: str, version: str | None, reason: str) -> None:
        aliases = self.aliases()
        old = aliases.get(alias)
        if version is None:
            aliases.pop(alias, None)
        else:
            aliases[alias] = version
        atomic_write_json(self.dir.aliases_path, aliases)
        self.log("alias", alias=alias, version=version, previous=old, reason=reason)

    def find_run(self, run_dir: Path, checkpoint_sha: str) -> str | None:
        """The version already registered for this run folder and checkpoint, if any."""
        for name in self.versions():
            run = self.record(name)["run"]
            if run["path"] == str(run_dir.resolve()) and run["checkpoint_sha256"] == checkpoint_sha:
                return name
        return None

    def find_version_of(self, run_dir: Path) -> str | None:
        """The latest version registered from this run folder, if any."""
        names = [n for n in self.versions() if self.record(n)["run"]["path"] == str(Path(run_dir).resolve())]
        return names[-1] if names else None

    def champion_run(self, exclude: str | Path | None = None) -> tuple[Path | None, str | None]:
        """(run folder, version) of the champion; (None, None) when there is none or when it is ``exclude``
        (a challenger trained into the champion's own folder is compared with nothing)."""
        name = self.aliases().get("champion")
        if name is None:
            return None, None
        run = Path(self.record(name)["run"]["path"])
        return (None, None) if exclude is not None and run == Path(exclude).resolve() else (run, name)

    def register(self, run_dir: str | Path, checkpoint: str = "best", note: str | None = None) -> str:
        """Register a run (evaluated on its own test split) as a new version; the same run and checkpoint
        registered again returns its existing version. Its parent is the champion at this time."""
        from ecgka.release.card import dataset_identity, run_dataset
        from ecgka.release.export import export_run

        claim = claim_folder(self.path, FolderKind.REGISTRY, option="registry")
        if claim.state is not ClaimState.SAME_KIND:
            claim.write_marker()
        run = RunDir(run_dir)
        sha = sha256_file(resolve_weights(run.path, checkpoint))
        existing = self.find_run(run.path, sha)
        if existing:
            return existing
        metrics = run.read_metrics("test")
        dataset, data = run_dataset(run)
        name = RegistryDir.version_name(len(self.versions()) + 1)
        export_run(run.path, self.dir.export_dir(name).path, "torchscript", checkpoint)
        record = {"version": name, "created": utc_now(), "note": note, "parent": self.aliases().get("champion"),
                  "run": {"path": str(run.path.resolve()), "checkpoint": checkpoint, "checkpoint_sha256": sha,
                          **{k: run.read_run().get(k) for k in ("name", "method", "init", "status")}},
                  "dataset": {**dataset_identity(dataset), "path": str(data.resolve())},
                  "config": run.read_config(), "metrics": {"split": "test", **_summary(metrics)},
                  "export": {"format": "torchscript", "model": f"{RegistryDir.EXPORT}/model.ts",
                             "card": f"{RegistryDir.EXPORT}/card.json"}}
        atomic_write_json(self.dir.model_json(name), record)
        self.log("register", version=name, run=record["run"]["path"], parent=record["parent"],
                 dataset=record["dataset"]["digest"])
        return name


def parse_ref(ref: str) -> tuple[Path, str] | None:
    """``REGISTRY@selector`` -> (registry folder, selector); None for a plain path (a run folder)."""
    if "@" not in ref:
        return None
    folder, selector = ref.rsplit("@", 1)
    if not RegistryDir(folder).is_registry():
        raise InputError(f"{folder}: not a model registry (reference {ref!r}; expected REGISTRY@champion or REGISTRY@v3)")
    return Path(folder), selector


def resolve_model(ref: str) -> tuple[Path, dict[str, Any] | None]:
    """(run folder, version record or None) of ``REGISTRY@alias``, ``REGISTRY@v3`` or a run folder."""
    parsed = parse_ref(ref)
    if parsed is None:
        if not RunDir(ref).is_run():
            raise InputError(f"{ref}: not a run folder or a REGISTRY@alias reference")
        return Path(ref), None
    reg = ModelRegistry(parsed[0])
    record = reg.record(reg.resolve(parsed[1]))
    return Path(record["run"]["path"]), record
