"""The champion-versus-challenger comparison report (Markdown + CSV + JSON, and the gate's decision).

Both models are evaluated on the same test rows of each dataset given (the new version's test split and
the previous one's, so the comparison is like for like); every metric is shown side by side with its
delta (challenger - champion) and a paired subject-bootstrap CI of the delta, followed by the dataset
lineage and the gate's decision.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from ecgka.catalog import ComparisonDir, FolderKind, claim_folder
from ecgka.catalog.info import DatasetInfo
from ecgka.errors import InputError
from ecgka.io import atomic_path, atomic_write_json, atomic_write_text
from ecgka.labels import GROUPS
from ecgka.release.gate import GateConfig, apply_gate
from ecgka.release.paired import PairedPredictions, metric_value, paired_ci
from ecgka.release.promote import Model

# (metric path, higher is better)
COMPARED: tuple[tuple[str, bool], ...] = (
    *((f"regression.{g}.{m}", False) for g in ("all", *GROUPS) for m in ("mae", "gm")),
    *((f"clinical.conditions.{c}.auroc", True) for c in ("hypo", "hyper")),
    *((f"clinical.conditions.{c}.operating_point.test.{s}", True) for c in ("hypo", "hyper")
      for s in ("sensitivity", "specificity", "ppv", "npv")),
)


def lineage(dataset: str | Path) -> list[str]:
    """The dataset's version chain, newest first (``ecgka lineage``'s lines)."""
    try:
        from ecgka.data.lineage import lineage_lines
    except ImportError:  # an ecgka without dataset versions: the manifest's own fingerprint only
        from ecgka.data.kind import describe

        return [f"{dataset}: {describe(dataset).fingerprint}"]
    return list(lineage_lines(dataset))


def compare_on(champion: Model | None, challenger: Model, data: Path, split: str, n_boot: int,
               seed: int) -> tuple[list[dict], dict, dict | None, PairedPredictions | None]:
    """Rows of one dataset (metric, champion, challenger, delta, CI), and both models' metrics."""
    cand, cand_preds = challenger.evaluate(data, split)
    base = paired = None
    if champion is not None:
        base, base_preds = champion.evaluate(data, split)
        paired = PairedPredictions.from_files(base_preds, cand_preds, cand)
    fingerprint = DatasetInfo.from_dict(cand["dataset"], what=f"{challenger.path} metrics").fingerprint
    rows = []
    for path, higher in COMPARED:
        b = None if base is None else metric_value(base, path)
        c = metric_value(cand, path)
        ci = (paired_ci(path, paired, base, cand, n_boot=n_boot, seed=seed) if paired is not None
              else {"lower": None, "upper": None})
        rows.append({"dataset": str(data), "fingerprint": fingerprint, "split": split, "metric": path,
                     "higher_is_better": higher, "champion": b, "challenger": c,
                     "delta": None if b is None or c is None else c - b,
                     "delta_ci_lower": ci["lower"], "delta_ci_upper": ci["upper"]})
    return rows, cand, base, paired


def _fmt(value: Any) -> str:
    return "-" if value is None or value != value else f"{value:.4f}" if isinstance(value, float) else str(value)


def markdown(result: dict[str, Any]) -> str:
    """The report as Markdown."""
    lines = ["# Champion vs challenger", "", f"- champion: {result['champion'] or 'none (first model)'}",
             f"- challenger: {result['challenger']}", ""]
    for data, rows in pd.DataFrame(result["rows"]).groupby("dataset", sort=False):
        lines += [f"## {rows['split'].iat[0]} split of {data} ({rows['fingerprint'].iat[0]})", "",
                  "| metric | better | champion | challenger | delta | 95% CI of delta (paired, subjects) |",
                  "|---|---|---|---|---|---|"]
        for r in rows.to_dict("records"):
            ci = (f"[{_fmt(r['delta_ci_lower'])}, {_fmt(r['delta_ci_upper'])}]"
                  if r["delta_ci_lower"] is not None else "-")
            lines.append(f"| {r['metric']} | {'higher' if r['higher_is_better'] else 'lower'} | {_fmt(r['champion'])} "
                         f"| {_fmt(r['challenger'])} | {_fmt(r['delta'])} | {ci} |")
        lines.append("")
    lines += ["## Dataset lineage", "", *[f"    {line}" for line in result["lineage"]], "", "## Gate decision", ""]
    gate = result["gate"]
    lines.append(f"**{'promote' if gate['promote'] else 'refuse: the champion stays'}**"
                 + (f" ({gate['reason']})" if gate.get("reason") else ""))
    lines += [f"- {'pass' if r['passed'] else 'FAIL'} `{r['metric']}`"
              + ("" if r["passed"] else f": {'; '.join(r['reasons'])}") for r in gate["rules"]]
    return "\n".join(lines) + "\n"


def write_comparison(challenger: str | Path | Model, datasets: list[str | Path], out: str | Path,
                     champion: str | Path | Model | None = None, gate: GateConfig | None = None,
                     names: tuple[str | None, str | None] = (None, None)) -> dict[str, Any]:
    """Evaluate both models (run folders, or registry copies) on each dataset's test split (the first
    dataset decides the gate) and write the report into ``out``; ``names``: the (champion, challenger)
    labels, e.g. registry versions. The same weights on both sides are refused."""
    from ecgka.release.gate import load_gate

    gate = gate or load_gate()
    cand_model = challenger if isinstance(challenger, Model) else Model.of_run(challenger)
    base_model = (champion if isinstance(champion, Model) or champion is None else Model.of_run(champion))
    if base_model is not None and base_model.sha256 == cand_model.sha256:
        raise InputError(f"{cand_model.path}: the same weights as the champion {names[0] or base_model.path} "
                         f"(SHA-256 {cand_model.sha256[:16]}...): a model is never compared with itself")
    claim = claim_folder(out, FolderKind.COMPARISON)
    rows, decision = [], None
    for i, data in enumerate(datasets):
        part, cand, base, paired = compare_on(base_model, cand_model, Path(data), gate.split, gate.n_boot, gate.seed)
        rows += part
        if i == 0:
            decision = (apply_gate(gate, base, cand, paired) if base is not None else
                        {"promote": True, "rules": [], "failed": [], "reason": "first registration: no champion"})
    result = {"champion": names[0] or (str(base_model.path) if base_model else None),
              "challenger": names[1] or str(cand_model.path),
              "datasets": [str(d) for d in datasets], "rows": rows, "lineage": lineage(datasets[0]), "gate": decision}
    target = ComparisonDir(out)
    target.path.mkdir(parents=True, exist_ok=True)
    with atomic_path(target.csv) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)
    atomic_write_text(target.markdown, markdown(result))
    atomic_write_json(target.gate, decision)
    atomic_write_json(target.json, result)  # last: its presence means the report is complete
    claim.write_marker()
    return result


def compare_with_champion(registry: str | Path, challenger: str | Path, datasets: list[str | Path | None],
                          out: str | Path, gate: str | Path | None = None) -> dict[str, Any]:
    """The ``compare`` stage: the registry's champion against the ``challenger`` run (its registered
    version's copy when registered), both from the registry's frozen copies, on each dataset's test split
    (empty entries, an unset optional variable, are dropped; the first dataset decides the gate), written
    into ``out``. No champion: the report has the challenger alone."""
    from ecgka.release.gate import load_gate
    from ecgka.release.registry import ModelRegistry

    reg = ModelRegistry(registry)
    name = reg.aliases().get("champion") if reg.dir.is_registry() else None
    champion = Model.of_version(reg, name) if name else None
    version = reg.find_version_of(Path(challenger)) if reg.dir.is_registry() else None
    cand = Model.of_version(reg, version) if version else Model.of_run(challenger)
    return write_comparison(cand, [d for d in datasets if d], out, champion, load_gate(gate),
                            names=(name, version))
