"""Promotion: the gate applied to a registered version against the champion, recorded in the registry."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ecgka.catalog import ComparisonDir, DatasetDir, FolderKind, RunDir, claim_folder
from ecgka.errors import InputError
from ecgka.io import atomic_write_json
from ecgka.release.gate import GateConfig, apply_gate, load_gate
from ecgka.release.paired import PairedPredictions
from ecgka.release.registry import ModelRegistry, parse_ref


def evaluation(run_dir: str | Path, data_dir: str | Path, split: str = "test") -> tuple[dict, Path]:
    """(metrics.json, predictions file) of the run on ``split`` of ``data_dir``, evaluated when missing
    (into ``eval/<fingerprint>/`` for a dataset the run was not trained on)."""
    from ecgka.data.kind import describe
    from ecgka.evaluation import evaluate_run
    from ecgka.evaluation.evaluate import other_dataset

    run, data = RunDir(run_dir), DatasetDir(data_dir)
    other = other_dataset(run.read_run(), describe(data.path), data.path, allow=True)
    if not run.metrics_path(split, other).is_file():
        evaluate_run(run.path, data.path, split, allow_other_dataset=True)
    return run.read_metrics(split, other), run.predictions_path(split, other)


def gate_versions(reg: ModelRegistry, champion: str, candidate: str, cfg: GateConfig,
                  data: str | Path | None = None) -> dict[str, Any]:
    """The gate's decision for ``candidate`` against ``champion`` on ``cfg.split`` of ``data`` (default: the
    candidate's own dataset), both models evaluated on the same rows."""
    base_rec, cand_rec = reg.record(champion), reg.record(candidate)
    data = Path(data or cand_rec["dataset"]["path"])
    base, base_preds = evaluation(base_rec["run"]["path"], data, cfg.split)
    cand, cand_preds = evaluation(cand_rec["run"]["path"], data, cfg.split)
    paired = PairedPredictions.from_files(base_preds, cand_preds, cand)
    decision = apply_gate(cfg, base, cand, paired)
    return {**decision, "champion": champion, "challenger": candidate, "split": cfg.split,
            "dataset": {"path": str(data), "fingerprint": cand.get("dataset", {}).get("fingerprint")}}


def promote(registry: str | Path, version: str, gate: GateConfig | str | Path | None = None,
            data: str | Path | None = None) -> dict[str, Any]:
    """Make ``version`` the champion if the gate passes (or there is no champion); else it stays the
    challenger. The decision (which rule failed, by how much) is logged and returned."""
    reg = ModelRegistry(registry)
    cfg = gate if isinstance(gate, GateConfig) else load_gate(gate)
    candidate, champion = reg.resolve(version), reg.aliases().get("champion")
    if champion is None:
        reg.set_alias("champion", candidate, "first registration: no champion")
        decision = {"promote": True, "rules": [], "failed": [], "champion": None, "challenger": candidate,
                    "reason": "first registration: no champion"}
        reg.log("promote", version=candidate, previous=None, reason=decision["reason"])
        return decision
    if champion == candidate:
        return {"promote": False, "rules": [], "failed": [], "champion": champion, "challenger": candidate,
                "reason": f"{candidate} is already the champion"}
    reg.set_alias("challenger", candidate, "candidate for promotion")
    decision = gate_versions(reg, champion, candidate, cfg, data)
    if decision["promote"]:
        reg.set_alias("champion", candidate, f"passed the gate against {champion}")
        reg.log("promote", version=candidate, previous=champion, rules=decision["rules"])
    else:
        reg.log("refuse", version=candidate, champion=champion, failed=decision["failed"], rules=decision["rules"])
    return decision


def promote_registered(registry: str | Path, run: str | Path | None = None, gate: str | Path | None = None,
                       gate_overrides: Sequence[str] = (), data: str | Path | None = None,
                       out: str | Path | None = None) -> dict[str, Any]:
    """``ecgka registry promote`` and the ``promote`` stage: apply the gate (file ``gate`` with ``key=value``
    ``gate_overrides``) to a registered version against the champion.

    ``registry`` is a version reference ``REGISTRY@v3`` (or ``@challenger``), or the registry folder when
    ``run`` names the run folder whose registered version is the candidate. With ``out`` the decision is
    also written to ``out/gate.json`` (a comparison folder)."""
    cfg = load_gate(gate, list(gate_overrides))
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
        return promote(folder, version, cfg, data)
    claim = claim_folder(out, FolderKind.COMPARISON)
    decision = promote(folder, version, cfg, data)
    Path(out).mkdir(parents=True, exist_ok=True)
    atomic_write_json(ComparisonDir(out).gate, decision)
    claim.write_marker(version)
    return decision
