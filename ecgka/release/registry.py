"""The model registry: a folder of plain files (``ecgka.catalog.RegistryDir``) that any tool can read.

Guarantees (docs/retraining.md, "Guarantees"):

- **Self-contained.** A version is a folder ``versions/vNNNN/`` holding a frozen copy of its run
  (``run/``: config.yaml, run.json, the registered checkpoint as ``checkpoints/best.pt``, its test
  evaluation, its conformal layer ``uncertainty.json``), its TorchScript export and card (``export/``, the
  card's ``uncertainty`` block holds the layer) and ``model.json``, whose ``files`` maps every
  other file of the folder to its SHA-256. Nothing of a version depends on the run folder it came from
  (``run.path`` in model.json is informational). Every use of a version (:meth:`ModelRegistry.run_copy`,
  :func:`resolve_model`) verifies those SHA-256s first.
- **Atomic and locked.** Every write holds the registry's lock (:meth:`ModelRegistry.locked`, an OS file
  lock: a concurrent writer waits up to ``LOCK_WAIT`` seconds); a version is built in a hidden temporary
  sibling and renamed into place, so a reader sees a whole version or none.
- **Refusals.** A run that is not complete, metrics of other weights than the ones registered, and a
  corrupted registry file are refused with one line naming the file.
- **Auditable.** ``aliases.json`` maps ``champion`` / ``challenger`` to versions; ``archived.json`` lists
  versions kept but never served; ``log.jsonl`` is append-only and records every registration, alias
  change, promotion, refusal, rollback and archiving with its time and reason.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ecgka.catalog import FolderKind, RegistryDir, RunDir, claim_folder, resolve_weights
from ecgka.catalog.folders import FOLDER_MARKER, Claim, ClaimState
from ecgka.errors import InputError
from ecgka.io import atomic_write_json, sha256_file, utc_now
from ecgka.locks import LOCK_FILE, FolderLock

ALIASES = ("champion", "challenger")
LOCK_WAIT = 60.0  # seconds a registry writer waits for another one to finish (concurrent registers queue)
RUN_COMPLETE = "complete"


def _summary(metrics: dict) -> dict:
    """metrics.json without its figure aggregates (kept small in model.json)."""
    return {k: v for k, v in metrics.items() if k != "figures"}


def _files_of(folder: Path) -> dict[str, str]:
    """``{relative path: SHA-256}`` of every file below ``folder`` (sorted)."""
    return {p.relative_to(folder).as_posix(): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()}


class ModelRegistry:
    """Read and change a registry folder (created on first registration)."""

    def __init__(self, path: str | Path):
        self.dir = RegistryDir(path)

    @property
    def path(self) -> Path:
        return self.dir.path

    # ---- reading ------------------------------------------------------------------------------------------------

    def aliases(self) -> dict[str, str]:
        return self.dir.read_aliases()

    def archived(self) -> dict[str, Any]:
        """``{version: {time, reason}}`` of the archived versions."""
        return self.dir.read_archived()

    def versions(self) -> list[str]:
        return self.dir.version_names()

    def record(self, version: str) -> dict[str, Any]:
        if not self.dir.model_json(version).is_file():
            raise InputError(f"{self.path}: no model version {version!r} (has {', '.join(self.versions()) or 'none'})")
        return self.dir.read_model(version)

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

    def read_log(self) -> list[dict[str, Any]]:
        """Every event of log.jsonl; a line that is not a JSON object is a one-line InputError."""
        path = self.dir.log_path
        if not path.is_file():
            return []
        rows = []
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"{path}: unreadable registry log ({exc})") from None
        for i, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                row = None
            if not isinstance(row, dict):
                raise InputError(f"{path}: line {i} is not a JSON object (a corrupted registry log; restore it "
                                 f"from a backup)")
            rows.append(row)
        return rows

    def check(self) -> None:
        """Read every registry-wide file (aliases.json, archived.json, log.jsonl) and every model.json: a
        corrupted one is a one-line InputError naming it."""
        self.aliases()
        self.archived()
        self.read_log()
        for name in self.versions():
            self.record(name)

    def verify(self, version: str) -> dict[str, Any]:
        """The version's record after checking the SHA-256 of every file it lists (one-line InputError
        naming the first missing or changed file)."""
        record = self.record(version)
        files = record.get("files")
        model_json = self.dir.model_json(version)
        if not isinstance(files, dict) or not files:
            raise InputError(f"{model_json}: lists no files (a version of an older registry; register its run "
                             f"again)")
        folder = self.dir.version_dir(version)
        for rel, digest in files.items():
            path = folder / rel
            if not path.is_file():
                raise InputError(f"{path}: missing from registry version {version} (listed in {model_json})")
            if sha256_file(path) != digest:
                raise InputError(f"{path}: SHA-256 differs from {model_json} (the registry's copy was changed; "
                                 f"restore it from a backup)")
        return record

    def run_copy(self, version: str) -> Path:
        """The verified path of the version's frozen run folder (evaluate, fine-tune, export from it)."""
        self.verify(version)
        return self.dir.run_dir(version)

    def is_archived(self, version: str) -> bool:
        return version in self.archived()

    def find_run(self, run_dir: Path, checkpoint_sha: str) -> str | None:
        """The version already registered for this run folder and checkpoint, if any."""
        for name in self.versions():
            run = self.record(name)["run"]
            if run["path"] == str(Path(run_dir).resolve()) and run["checkpoint_sha256"] == checkpoint_sha:
                return name
        return None

    def find_version_of(self, run_dir: Path) -> str | None:
        """The latest version registered from this run folder, if any."""
        names = [n for n in self.versions() if self.record(n)["run"]["path"] == str(Path(run_dir).resolve())]
        return names[-1] if names else None

    def champion_run(self, exclude: str | Path | None = None) -> tuple[Path | None, str | None]:
        """(the champion's verified run copy, version); (None, None) when there is none or when its origin
        run folder is ``exclude`` (a challenger trained into the champion's own folder is compared with
        nothing)."""
        name = self.aliases().get("champion")
        if name is None:
            return None, None
        origin = Path(self.record(name)["run"]["path"])
        if exclude is not None and origin == Path(exclude).resolve():
            return None, None
        return self.run_copy(name), name

    # ---- writing (every write holds the lock) ---------------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self, wait: float = LOCK_WAIT) -> Iterator[ModelRegistry]:
        """Hold the registry's write lock (re-entrant within a process; another process waits ``wait``
        seconds, then is refused in one line). The folder is claimed as a registry: a folder of anything
        else is refused before the lock file is made, a new one gets its marker under the lock."""
        if self._entries() and not (self.path / LOCK_FILE).exists():  # with a lock file: checked under it
            claim_folder(self.path, FolderKind.REGISTRY, option="registry")
        with FolderLock(self.path, "model registry", wait=wait):
            if not (self.path / FOLDER_MARKER).is_file():
                if self._entries():  # something else appeared meanwhile: the same one-line refusal
                    claim_folder(self.path, FolderKind.REGISTRY, option="registry")
                Claim(self.path, FolderKind.REGISTRY, ClaimState.NEW).write_marker()
            yield self

    def _entries(self) -> list[Path]:
        """The folder's entries but the lock file."""
        return [p for p in self.path.iterdir() if p.name != LOCK_FILE] if self.path.is_dir() else []

    def log(self, event: str, **fields: Any) -> dict[str, Any]:
        """Append one event to log.jsonl (append-only, flushed to disk), under the lock."""
        entry = {"time": utc_now(), "event": event, **fields}
        with self.locked():
            self.read_log()  # a corrupted log is refused, never appended to
            with open(self.dir.log_path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(entry, sort_keys=False, default=str) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
        return entry

    def set_alias(self, alias: str, version: str | None, reason: str, event: str = "alias") -> dict[str, Any]:
        """Point ``alias`` at ``version`` (None: remove it) and log it with the previous version and the
        reason. An archived version is never made champion or challenger."""
        if alias not in ALIASES:
            raise InputError(f"unknown alias {alias!r} (valid: {', '.join(ALIASES)})")
        with self.locked():
            self.check()  # a corrupted registry file is refused before anything is written
            aliases = self.aliases()
            if version is not None:
                self.record(version)
                if self.is_archived(version):
                    raise InputError(f"{self.path}@{version}: is archived ({self.archived()[version].get('reason')}); "
                                     f"an archived version cannot be {alias}")
                if alias == "champion":
                    self.verify(version)
            old = aliases.get(alias)
            if version is None:
                aliases.pop(alias, None)
            else:
                aliases[alias] = version
            atomic_write_json(self.dir.aliases_path, aliases)
            return self.log(event, alias=alias, version=version, previous=old, reason=reason)

    def set_challenger(self, version: str | None, reason: str) -> dict[str, Any]:
        """``ecgka registry alias REG set|unset challenger``."""
        if version is None and "challenger" not in self.aliases():
            raise InputError(f"{self.path}: has no challenger to unset")
        return self.set_alias("challenger", None if version is None else self.resolve(version), reason)

    def rollback(self, version: str, reason: str) -> dict[str, Any]:
        """Make an earlier version champion again (``ecgka registry rollback``)."""
        with self.locked():
            name = self.resolve(version)
            if self.is_archived(name):
                raise InputError(f"{self.path}@{name}: is archived ({self.archived()[name].get('reason')}); an "
                                 f"archived version cannot be champion")
            current = self.aliases().get("champion")
            if current is None:
                raise InputError(f"{self.path}: has no champion to roll back (promote a version first)")
            if RegistryDir.version_number(name) >= RegistryDir.version_number(current):
                raise InputError(f"{self.path}@{name}: not earlier than the champion {current}; roll back to an "
                                 f"earlier version (promote a newer one through the gate)")
            return self.set_alias("champion", name, reason, event="rollback")

    def archive(self, version: str, reason: str) -> dict[str, Any]:
        """Keep a version but never serve it (``ecgka registry archive``)."""
        with self.locked():
            name = self.resolve(version)
            holds = [alias for alias, v in self.aliases().items() if v == name]
            if holds:
                raise InputError(f"{self.path}@{name}: is the {' and '.join(holds)}; roll back, promote or unset "
                                 f"first, then archive it")
            archived = self.archived()
            if name in archived:
                raise InputError(f"{self.path}@{name}: is already archived ({archived[name].get('time')})")
            archived[name] = {"time": utc_now(), "reason": reason}
            atomic_write_json(self.dir.archived_path, archived)
            return self.log("archive", alias=None, version=name, previous=None, reason=reason)

    def register(self, run_dir: str | Path, checkpoint: str = "best", note: str | None = None) -> str:
        """Register a complete run (evaluated on its own test split with these weights) as a new version: a
        frozen copy of the run, its TorchScript export and model.json with every file's SHA-256. The same
        run and checkpoint registered again returns its existing version (:meth:`register_run` says whether
        this call created it). Its parent is the champion at this time."""
        return self.register_run(run_dir, checkpoint, note)[0]

    def register_run(self, run_dir: str | Path, checkpoint: str = "best",
                     note: str | None = None) -> tuple[str, bool]:
        """(version, created): ``created`` False when this run and checkpoint were registered already."""
        run = RunDir(Path(run_dir).resolve())
        if not run.is_run():
            raise InputError(f"{run_dir}: not a run folder (no {RunDir.CONFIG})")
        status = run.read_run().get("status")
        if status != RUN_COMPLETE:
            raise InputError(f"{run.path}: run is not complete (run.json status {status!r}); finish it with "
                             f"`ecgka train` before registering")
        with self.locked():
            self.check()
            weights = resolve_weights(run.path, checkpoint)
            sha = sha256_file(weights)
            existing = self.find_run(run.path, sha)
            if existing:
                return existing, False
            metrics = run.read_metrics("test")
            evaluated = (metrics.get("model") or {}).get("checkpoint_sha256")
            if evaluated != sha:
                raise InputError(f"metrics of {run.eval_dir('test')} are of another checkpoint; run ecgka evaluate "
                                 f"again")
            name = self._build_version(run, checkpoint, weights, sha, metrics, note)
            record = self.record(name)
            self.log("register", version=name, run=record["run"]["path"], parent=record["parent"],
                     dataset=record["dataset"]["digest"], checkpoint_sha256=sha)
            return name, True

    def _copy_run(self, run: RunDir, weights: Path, sha: str, target: Path) -> None:
        """The frozen run folder: config, run.json (dataset path absolute), the weights as best.pt, the
        training log and the test evaluation (with the val predictions its operating points came from)."""
        from ecgka.release.card import run_dataset

        copy = RunDir(target)
        copy.checkpoints_dir.mkdir(parents=True)
        for name in (RunDir.CONFIG, RunDir.LOG, FOLDER_MARKER):
            if (run.path / name).is_file():
                shutil.copy2(run.path / name, target / name)
        shutil.copyfile(weights, copy.checkpoint("best"))
        if sha256_file(copy.checkpoint("best")) != sha:
            raise InputError(f"{weights}: changed while it was registered; register again")
        info = run.read_run()
        info["dataset_dir"] = str(run_dataset(run)[1])
        atomic_write_json(copy.run_json, info)
        shutil.copytree(run.eval_dir("test"), copy.eval_dir("test"))
        if run.predictions_path("val").is_file():
            copy.eval_dir("val").mkdir(parents=True)
            shutil.copyfile(run.predictions_path("val"), copy.predictions_path("val"))
        atomic_write_json(copy.uncertainty, run_uncertainty(run, sha))

    def _build_version(self, run: RunDir, checkpoint: str, weights: Path, sha: str, metrics: dict,
                       note: str | None) -> str:
        """Build the version in a hidden sibling, then rename it to the next free ``vNNNN`` (under the lock;
        a name taken meanwhile is retried with the next)."""
        from ecgka.release.card import dataset_identity, run_dataset
        from ecgka.release.export import export_run

        self.dir.versions_dir.mkdir(parents=True, exist_ok=True)
        info = run.read_run()
        tmp = self.dir.versions_dir / f".build.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            tmp.mkdir()
            run_copy = tmp / RegistryDir.RUN
            self._copy_run(run, weights, sha, run_copy)
            dataset, data = run_dataset(RunDir(run_copy))
            for _ in range(100):
                name = self.dir.next_version_name()
                final = self.dir.version_dir(name)
                export = tmp / RegistryDir.EXPORT
                if export.exists():
                    shutil.rmtree(export)
                export_run(run_copy, export, "torchscript", "best",
                           registry={"path": str(self.path.resolve()), "version": name,
                                     "origin_run": str(run.path)})
                card_path = export / "card.json"
                card = json.loads(card_path.read_text())
                card["run"]["path"] = str(final / RegistryDir.RUN)  # where the copy lives once renamed
                atomic_write_json(card_path, card)
                record = {
                    "version": name, "created": utc_now(), "note": note, "parent": self.aliases().get("champion"),
                    "run": {"path": str(run.path), "copy": RegistryDir.RUN, "checkpoint": checkpoint,
                            "checkpoint_sha256": sha, **{k: info.get(k) for k in ("name", "method", "init", "status")}},
                    "dataset": {**dataset_identity(dataset), "path": str(data)},
                    "config": run.read_config(), "metrics": {"split": "test", **_summary(metrics)},
                    "export": {"format": "torchscript", "model": f"{RegistryDir.EXPORT}/model.ts",
                               "card": f"{RegistryDir.EXPORT}/card.json"},
                    "files": _files_of(tmp)}
                atomic_write_json(tmp / RegistryDir.MODEL, record)
                if final.exists():
                    continue
                try:
                    os.rename(tmp, final)  # atomic; refused when another writer made a non-empty ``final``
                except OSError:
                    continue
                return name
            raise InputError(f"{self.dir.versions_dir}: no free version name (too many concurrent registrations)")
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


def run_uncertainty(run: RunDir, sha: str) -> dict[str, Any]:
    """The run's conformal layer (JSON) for these weights (``ecgka.release.card.run_layer_json``: its
    ``uncertainty.json``, or fitted from the val predictions of its evaluation); a run with neither is
    refused in one line (evaluate it first)."""
    from ecgka.release.card import run_layer_json

    data = run_layer_json(run, sha)
    if data is None:
        raise InputError(f"{run.path}: no conformal layer ({RunDir.UNCERTAINTY}) of these weights and no val "
                         f"predictions to fit one; run `ecgka evaluate {run.path} --data DIR` before registering")
    return data


def parse_ref(ref: str) -> tuple[Path, str] | None:
    """``REGISTRY@selector`` -> (registry folder, selector); None for a plain path (a run folder)."""
    if "@" not in ref:
        return None
    folder, selector = ref.rsplit("@", 1)
    if not RegistryDir(folder).is_registry():
        raise InputError(f"{folder}: not a model registry (reference {ref!r}; expected REGISTRY@champion or REGISTRY@v3)")
    return Path(folder), selector


def resolve_model(ref: str, *, allow_archived: bool = False) -> tuple[Path, dict[str, Any] | None]:
    """(run folder, version record or None) of ``REGISTRY@alias``, ``REGISTRY@v3`` or a run folder.

    For a registry reference the run folder is the version's verified frozen copy inside the registry
    (never the run folder it was registered from); an archived version is refused unless
    ``allow_archived``."""
    parsed = parse_ref(ref)
    if parsed is None:
        if not RunDir(ref).is_run():
            raise InputError(f"{ref}: not a run folder or a REGISTRY@alias reference")
        return Path(ref), None
    reg = ModelRegistry(parsed[0])
    reg.check()
    name = reg.resolve(parsed[1])
    if not allow_archived and reg.is_archived(name):
        raise InputError(f"{ref}: version {name} is archived ({reg.archived()[name].get('reason')}); an archived "
                         f"version is not served")
    return reg.run_copy(name), reg.record(name)
