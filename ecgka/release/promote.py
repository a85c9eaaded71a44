"""Promotion: the gate applied to a registered version against the champion, recorded in the registry.

What the gate compares cannot be fooled (docs/retraining.md, "Guarantees"):

- both models are the registry's own frozen, SHA-verified copies (never the run folders they came from),
  evaluated into a cache keyed by the checkpoint's SHA-256 (``REGISTRY/.eval-cache/<sha>/``), so stale
  metrics of other weights are never read;
- the same weights as champion and challenger are refused;
- a gate dataset whose test split shares subjects with either model's training or validation split is
  refused;
- the decision is made first, then the aliases and the log are written together under the registry's
  lock, after checking that the champion has not changed meanwhile: an error leaves nothing behind, and
  two concurrent promotions never both pass against the same champion.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from ecgka.catalog import ComparisonDir, DatasetDir, FolderKind, RunDir, claim_folder
from ecgka.errors import InputError
from ecgka.io import atomic_write_json, sha256_file
from ecgka.locks import FolderLock
from ecgka.release.gate import GateConfig, apply_gate, gate_identity, load_gate
from ecgka.release.paired import PairedPredictions
from ecgka.release.registry import ModelRegistry, parse_ref

# exit code of `ecgka registry promote` when the gate refuses (an error is 2, a locked registry 75)
GATE_REFUSED_EXIT = 3
EVAL_CACHE = ".eval-cache"
_NOT_LINKED = {RunDir.EVAL, RunDir.CACHE, RunDir.TENSORBOARD}


def evaluation(run_dir: str | Path, data_dir: str | Path, split: str = "test",
               sha256: str | None = None) -> tuple[dict, Path]:
    """(metrics.json, predictions file) of the run on ``split`` of ``data_dir``, evaluated when missing
    (into ``eval/<fingerprint>/`` for a dataset the run was not trained on) or when the metrics record
    other weights than ``sha256``."""
    from ecgka.data.kind import describe
    from ecgka.evaluation import evaluate_run
    from ecgka.evaluation.evaluate import other_dataset

    run, data = RunDir(run_dir), DatasetDir(data_dir)
    other = other_dataset(run.read_run(), describe(data.path), data.path, allow=True)
    path = run.metrics_path(split, other)
    if not path.is_file() or (sha256 and _recorded_sha(run.read_metrics(split, other)) != sha256):
        evaluate_run(run.path, data.path, split, allow_other_dataset=True)
    metrics = run.read_metrics(split, other)
    if sha256 and _recorded_sha(metrics) not in (None, sha256):
        raise InputError(f"{path}: metrics of other weights ({_recorded_sha(metrics)}) than the model gated "
                         f"({sha256})")
    return metrics, run.predictions_path(split, other)


def _recorded_sha(metrics: dict) -> str | None:
    return (metrics.get("model") or {}).get("checkpoint_sha256")


class Model:
    """A model the gate evaluates: its verified folder, checkpoint SHA-256 and name (a registry version)."""

    def __init__(self, path: Path, sha256: str, name: str | None, cache: Path | None = None):
        self.path, self.sha256, self.name, self.cache = Path(path), sha256, name, cache

    @classmethod
    def of_version(cls, reg: ModelRegistry, version: str) -> Model:
        """The registry's frozen copy of ``version`` (SHA-verified), evaluated into the registry's cache."""
        record = reg.record(version)
        copy = reg.run_copy(version) if hasattr(reg, "run_copy") else Path(record["run"]["path"])
        sha = record["run"]["checkpoint_sha256"]
        names = dict.fromkeys((record["run"].get("checkpoint") or "best", "best"))
        found = [w for w in (RunDir(copy).checkpoint(n) for n in names) if w.is_file()]
        if not found or sha256_file(found[0]) != sha:
            raise InputError(f"{found[0] if found else copy}: not the weights of {reg.path}@{version} "
                             f"(SHA-256 {sha}); restore the registry from a backup")
        return cls(copy, sha, version, reg.path / EVAL_CACHE)

    @classmethod
    def of_run(cls, run_dir: str | Path, checkpoint: str = "best") -> Model:
        return cls(Path(run_dir), sha256_file(RunDir(run_dir).checkpoint(checkpoint)), None)

    def evaluate(self, data: str | Path, split: str = "test") -> tuple[dict, Path]:
        """(metrics, predictions) of these weights on ``split`` of ``data``; a registry copy is evaluated in a
        folder of the cache keyed by its SHA-256 that links to the copy's files (the copy stays untouched)."""
        if self.cache is None:
            return evaluation(self.path, data, split, self.sha256)
        shadow = self.cache / self.sha256
        with FolderLock(shadow, "evaluation cache", wait=600):
            for entry in self.path.iterdir():
                link = shadow / entry.name
                if entry.name not in _NOT_LINKED and not link.exists():
                    os.symlink(entry.resolve(), link)
            return evaluation(shadow, data, split, self.sha256)


def _subjects(data: Path, splits: tuple[str, ...]) -> set:
    ids: set = set()
    for split in splits:
        for shard in DatasetDir(data).shards(split):
            ids.update(pd.read_parquet(shard, columns=["subject_id"])["subject_id"].tolist())
    return ids


def check_no_leak(data: Path, split: str, models: dict[str, dict]) -> None:
    """Refuse a gate dataset whose ``split`` shares subjects with a model's training or validation split."""
    gate_subjects = _subjects(data, (split,))
    for who, record in models.items():
        trained = Path(record["dataset"]["path"])
        if not DatasetDir(trained).manifest_path.is_file():
            raise InputError(f"{trained}: the {who} {record['version']}'s training dataset is not there; the gate "
                             f"cannot check that {data} holds none of its training subjects")
        shared = gate_subjects & _subjects(trained, ("train", "val"))
        if shared:
            raise InputError(f"{data}: its {split} split shares {len(shared)} subject(s) with the training or "
                             f"validation split of the {who} {record['version']} ({trained}); gate on data neither "
                             f"model was trained or tuned on")


def _digest(data: Path) -> str | None:
    manifest = DatasetDir(data).read_manifest()
    return manifest.get("digest") or manifest.get("fingerprint")


def gate_versions(reg: ModelRegistry, champion: str, candidate: str, cfg: GateConfig,
                  data: str | Path | None = None) -> dict[str, Any]:
    """The gate's decision for ``candidate`` against ``champion`` on ``cfg.split`` of ``data`` (default: the
    candidate's own dataset), both registry copies evaluated on the same rows. Writes nothing but the
    evaluation cache."""
    base_rec, cand_rec = reg.record(champion), reg.record(candidate)
    base_model, cand_model = Model.of_version(reg, champion), Model.of_version(reg, candidate)
    if base_model.sha256 == cand_model.sha256:
        raise InputError(f"{reg.path}@{candidate} has the same weights as the champion {champion} (SHA-256 "
                         f"{cand_model.sha256[:16]}...): a model is never gated against itself")
    data = Path(data or cand_rec["dataset"]["path"])
    check_no_leak(data, cfg.split, {"champion": base_rec, "challenger": cand_rec})
    base, base_preds = base_model.evaluate(data, cfg.split)
    cand, cand_preds = cand_model.evaluate(data, cfg.split)
    paired = PairedPredictions.from_files(base_preds, cand_preds, cand)
    decision = apply_gate(cfg, base, cand, paired)
    return {**decision, "champion": champion, "challenger": candidate, "split": cfg.split,
            "dataset": {"path": str(data), "fingerprint": cand.get("dataset", {}).get("fingerprint"),
                        "digest": _digest(data)},
            "models": {"champion": base_model.sha256, "challenger": cand_model.sha256}}


def _lock(reg: ModelRegistry) -> Any:
    return reg.locked() if hasattr(reg, "locked") else FolderLock(reg.path, "model registry", wait=60)


def promote(registry: str | Path, version: str, gate: GateConfig | str | Path | None = None,
            data: str | Path | None = None, *, new_registry: bool = True) -> dict[str, Any]:
    """Make ``version`` the champion if the gate passes (or, with ``new_registry``, when there is no
    champion); else it stays the challenger. The decision is made first; then, under the registry's lock
    and only if the champion is still the one gated against, the aliases change and the decision (which
    rule failed, by how much; the gate file and its SHA-256, the dataset digest, both models' SHA-256s) is
    logged. An error on the way leaves the registry as it was."""
    reg = ModelRegistry(registry)
    if isinstance(gate, GateConfig):
        cfg, identity = gate, {"path": None, "sha256": None}
    else:
        cfg, identity = load_gate(gate), gate_identity(gate)
    candidate, champion = reg.resolve(version), reg.aliases().get("champion")
    if champion is None:
        if not new_registry:
            raise InputError(f"{reg.path}: has no champion; starting a new registry needs new_registry "
                             f"(--new-registry, or the stage option new_registry: true); is the registry path right?")
        reason = "first registration: no champion"
        with _lock(reg):
            if reg.aliases().get("champion") is not None:
                return _changed(reg, candidate, None)
            reg.set_alias("champion", candidate, reason)
            reg.log("promote", version=candidate, previous=None, reason=reason, gate=identity)
        _mirror(reg, candidate)
        return {"promote": True, "rules": [], "failed": [], "champion": None, "challenger": candidate,
                "reason": reason}
    if champion == candidate:
        _mirror(reg, candidate)  # a failed mirror is retried by promoting again
        return {"promote": False, "rules": [], "failed": [], "champion": champion, "challenger": candidate,
                "reason": f"{candidate} is already the champion"}
    decision = {**gate_versions(reg, champion, candidate, cfg, data), "gate": identity}
    audit = {"gate": identity, "dataset": decision["dataset"], "models": decision["models"],
             "rules": decision["rules"]}
    with _lock(reg):
        if reg.aliases().get("champion") != champion:
            return _changed(reg, candidate, champion)
        reg.set_alias("challenger", candidate, "candidate for promotion")
        if decision["promote"]:
            reg.set_alias("champion", candidate, f"passed the gate against {champion}")
            reg.log("promote", version=candidate, previous=champion, **audit)
        else:
            reg.log("refuse", version=candidate, champion=champion, failed=decision["failed"], **audit)
    if decision["promote"]:
        _mirror(reg, candidate)
    return decision


def rollback(registry: str | Path, version: str, reason: str) -> dict[str, Any]:
    """``ecgka registry rollback``: an earlier version champion again (``ModelRegistry.rollback``), and in the
    registry's MLflow mirror when one is configured."""
    reg = ModelRegistry(registry)
    entry = reg.rollback(version, reason)
    _mirror(reg, entry["version"])
    return entry


def _mirror(reg: ModelRegistry, version: str) -> None:
    """The ``champion`` alias in the registry's MLflow model registry, when ``REG/mlflow.json`` configures one
    (``ecgka.release.mlflow_export``); a mirror that fails warns and the promotion stands."""
    from ecgka.release.mlflow_export import mirror_champion

    mirror_champion(reg.path, version, reg.record(version)["run"]["checkpoint_sha256"])


def _changed(reg: ModelRegistry, candidate: str, gated: str | None) -> dict[str, Any]:
    """The champion changed while the gate ran: refused (logged), nothing else changes."""
    now = reg.aliases().get("champion")
    reason = (f"the champion changed from {gated or 'none'} to {now} while the gate ran (another promotion); "
              f"promote {candidate} again to gate it against {now}")
    reg.log("refuse", version=candidate, champion=now, gated_against=gated, reason=reason)
    return {"promote": False, "rules": [], "failed": [reason], "champion": now, "challenger": candidate,
            "reason": reason}


def promote_registered(registry: str | Path, run: str | Path | None = None, gate: str | Path | None = None,
                       data: str | Path | None = None, new_registry: bool = False,
                       out: str | Path | None = None) -> dict[str, Any]:
    """``ecgka registry promote`` and the ``promote`` stage: apply the gate file ``gate`` (no overrides: a
    gate changes only by an edit of its file) to a registered version against the champion.

    ``registry`` is a version reference ``REGISTRY@v3`` (or ``@challenger``), or the registry folder when
    ``run`` names the run folder whose registered version is the candidate. A registry without a champion
    is refused unless ``new_registry`` (a typo in the registry path never skips the gate). With ``out`` the
    decision is also written to ``out/gate.json`` (a comparison folder)."""
    load_gate(gate)  # a bad gate file fails before anything else
    parsed = parse_ref(str(registry))
    if parsed is not None and run is not None:
        raise InputError(f"{registry}: give a version reference REGISTRY@v3 or the registry and a run folder, "
                         "not both")
    if parsed is not None:
        folder, version = parsed
    elif run is None:
        raise InputError(f"{registry}: give a version reference REGISTRY@v3 (or REGISTRY@challenger), or the "
                         "registry and the run folder whose registered version to promote")
    else:
        folder, version = Path(registry), ModelRegistry(registry).find_version_of(Path(run))
        if version is None:
            raise InputError(f"{run}: not registered in {registry} (a register stage comes before the gate)")
    if out is None:
        return promote(folder, version, gate, data, new_registry=new_registry)
    claim = claim_folder(out, FolderKind.COMPARISON)
    decision = promote(folder, version, gate, data, new_registry=new_registry)
    Path(out).mkdir(parents=True, exist_ok=True)
    atomic_write_json(ComparisonDir(out).gate, decision)
    claim.write_marker(version)
    return decision
