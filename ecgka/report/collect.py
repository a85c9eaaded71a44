"""Read run directories (run.json, config, log, the split's metrics.json; via ``ecgka.catalog.RunDir``) into one
report model.

The report reads only aggregates: each run's metrics.json (written by ``ecgka evaluate``, which embeds the
dataset manifest's summary and the figure aggregates), the per-epoch log and the configs. It never opens
predictions or shards, so no individual's data can reach it.

Grouping (documented in docs/report.md): ``run.json`` may carry
- ``group``: ``"main"`` (default) for the method comparison, any name starting with ``"ablation"`` for an
  ablation table (rows labelled by ``ablation``, else the display name), ``"imbalance"`` for the
  imbalance-ratio table;
- ``variant``: the imbalance variant name; when absent it is read from a ``dataset_dir`` of the form
  ``.../variants/<name>``, and such a run defaults to group ``"imbalance"``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ecgka.catalog import DatasetDir, RunDir
from ecgka.catalog.info import DatasetInfo
from ecgka.errors import InputError
from ecgka.io import sha256_file
from ecgka.keys import SPLITS
from ecgka.labels import ShotRule
from ecgka.losses.methods import PAPER_ORDER
from ecgka.losses.methods import display_name as method_display_name


@dataclass
class RunEntry:
    """One evaluated run, as the report sees it."""

    name: str
    display_name: str
    method: str
    dist_loss: bool
    group: str
    ablation: str | None
    variant: str | None
    metrics: dict
    run: dict
    dataset: DatasetInfo | None = None  # the evaluated dataset (metrics.json's ``dataset`` block)
    config: dict = field(default_factory=dict)
    epochs: list[dict] = field(default_factory=list)

    @property
    def fingerprint(self) -> str | None:
        return None if self.dataset is None else self.dataset.fingerprint


@dataclass
class ReportModel:
    """Everything the tables, figures and pages are made from."""

    split: str
    runs: list[RunEntry]
    datasets: dict[str, DatasetInfo]  # fingerprint -> the dataset's description (from metrics.json)

    @property
    def main_runs(self) -> list[RunEntry]:
        return [r for r in self.runs if r.group == "main"]

    @property
    def main_dataset(self) -> DatasetInfo:
        runs = self.main_runs or self.runs
        return runs[0].dataset

    def groups(self, prefix: str) -> dict[str, list[RunEntry]]:
        out: dict[str, list[RunEntry]] = {}
        for r in self.runs:
            if r.group.startswith(prefix):
                out.setdefault(r.group, []).append(r)
        return out


def _variant_of(run: dict) -> str | None:
    if run.get("variant"):
        return str(run["variant"])
    parts = Path(str(run.get("dataset_dir") or "")).parts
    return parts[-1] if len(parts) >= 2 and parts[-2] == DatasetDir.VARIANTS else None


def base_method(run: dict) -> tuple[str, bool]:
    """(base method, dist_loss): a plain ``dist_loss`` method is Vanilla + Dist Loss."""
    method = str(run.get("method") or "vanilla")
    dist = bool(run.get("dist_loss", False)) or method == "dist_loss"
    return ("vanilla" if method == "dist_loss" else method), dist


def display_name(run: dict) -> str:
    if run.get("display_name"):
        return str(run["display_name"])
    return method_display_name(*base_method(run))


def has_clinical(runs: list[RunEntry]) -> bool:
    """Whether these runs carry clinical metrics (a potassium label; ``clinical.applies_to``)."""
    return bool(runs) and all(r.metrics.get("clinical") for r in runs)


def evaluation_key(rd: RunDir, split: str, dataset: str | None) -> str | None:
    """Where the run's evaluation on ``dataset`` (a fingerprint) lives: ``eval/<fingerprint>/`` for another
    dataset, or None (``eval/<split>/``) when none is there and its own evaluation is of that dataset
    (``ecgka evaluate --allow-other-dataset`` writes the run's own dataset there too)."""
    if dataset is None or rd.metrics_path(split, dataset).is_file() or not rd.metrics_path(split).is_file():
        return dataset
    own = (rd.read_metrics(split).get("dataset") or {}).get("fingerprint")
    return None if own == dataset else dataset


def load_run(run_dir: str | Path, split: str = "test", dataset: str | None = None) -> RunEntry:
    """Read one run directory (its evaluation on ``dataset``, a fingerprint, when given: ``ecgka evaluate
    --allow-other-dataset``, or its own evaluation when that is of ``dataset``); a missing run.json or
    metrics.json is a one-line InputError."""
    rd = RunDir(run_dir)
    run = rd.read_run()
    dataset = evaluation_key(rd, split, dataset)
    if not rd.metrics_path(split, dataset).is_file():
        done = [s for s in SPLITS if s != split and rd.metrics_path(s, dataset).is_file()]
        if done:  # evaluated, on another split: the fix is --split, not another evaluation
            raise InputError(f"{rd.path}: not evaluated on {split}, only on {', '.join(done)}; report it with "
                             f"--split {done[0]} (or run `ecgka evaluate {rd.path} --data DIR --split {split}`)")
    metrics = rd.read_metrics(split, dataset)
    check_checkpoint(rd, metrics, rd.metrics_path(split, dataset))
    method, dist = base_method(run)
    variant = _variant_of(run)
    info = evaluated_dataset(DatasetInfo.from_dict(metrics.get("dataset"),
                                                   what=str(rd.metrics_path(split, dataset))), metrics)
    group = str(run.get("group") or ("imbalance" if variant else "main"))
    return RunEntry(name=str(run.get("name") or rd.path.name), display_name=display_name(run), method=method,
                    dist_loss=dist, group=group, ablation=run.get("ablation"), variant=variant,
                    metrics=metrics, run=run, config=rd.read_config(), epochs=rd.read_log(),
                    dataset=info)


def evaluated_dataset(ds: DatasetInfo, metrics: dict) -> DatasetInfo:
    """The dataset grouped by the shot rule the run was evaluated with (``ecgka evaluate few=0`` overrides
    the manifest's): the shot-region table then lists the regions the results are computed on."""
    shots = metrics.get("shots") or {}
    if shots.get("source") != "override":
        return ds
    return ds.with_shots(ShotRule.model_validate({k: shots[k] for k in ("rule", "many", "few") if k in shots}))


def evaluated_checkpoint(metrics: dict) -> tuple[str, str | None]:
    """(checkpoint name, its SHA-256 when evaluated) as ``ecgka evaluate`` recorded them in metrics.json."""
    model = metrics.get("model") if isinstance(metrics.get("model"), dict) else {}
    return str(model.get("checkpoint") or metrics.get("checkpoint") or "best"), model.get("checkpoint_sha256")


def checkpoint_changed(rd: RunDir, metrics: dict) -> str | None:
    """Why the evaluated weights are no longer the run's (None when they are, or when the evaluation
    predates recorded SHA-256s: nothing to compare with)."""
    which, sha = evaluated_checkpoint(metrics)
    if sha is None:
        return None
    path = rd.checkpoint(which)
    if not path.is_file():
        return f"its {which} checkpoint is gone"
    if sha256_file(path) != sha:
        return f"its {which} checkpoint has changed since it was evaluated"
    return None


def check_checkpoint(rd: RunDir, metrics: dict, where: Path) -> None:
    """Refuse metrics of weights the run no longer holds (e.g. evaluated while training went on)."""
    why = checkpoint_changed(rd, metrics)
    if why:
        raise InputError(f"{where}: {why}; re-run `ecgka evaluate {rd.path} --data DIR` (or pass "
                         f"--reevaluate to `ecgka report`)")


def check_distinct(run_dirs) -> None:
    """Each run once: the same run given twice (however spelt) would be two identical rows, one bolded as
    best, and duplicate keys in the tidy tables."""
    seen: dict[Path, str] = {}
    for d in run_dirs:
        key = Path(d).resolve()
        if key in seen:
            spelt = f" (as {seen[key]} and {d})" if str(seen[key]) != str(d) else ""
            raise InputError(f"run {d} is given twice{spelt}: give each run once")
        seen[key] = str(d)


def _unique_names(runs: list[RunEntry]) -> None:
    seen: dict[str, int] = {}
    for r in runs:
        seen[r.name] = seen.get(r.name, 0) + 1
        if seen[r.name] > 1:
            r.name = f"{r.name}-{seen[r.name]}"


def natural_key(text: str) -> tuple:
    """``"Method 2"`` before ``"Method 10"``: digit runs compare as numbers."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part.lower())
                 for part in re.split(r"(\d+)", str(text)) if part)


def _order_key(r: RunEntry) -> tuple:
    """The paper's order (Vanilla, then each baseline, each followed by its + Dist Loss); unknown methods after,
    in natural order; within a method, runs by natural order of their ablation label and name."""
    rank = PAPER_ORDER.index(r.method) if r.method in PAPER_ORDER else len(PAPER_ORDER)
    return (rank, natural_key(r.method), r.dist_loss, natural_key(r.ablation or ""), natural_key(r.display_name),
            natural_key(r.name))


def check_one_dataset(runs: list[RunEntry]) -> None:
    """Refuse runs evaluated on different datasets: their tables would compare different test sets."""
    by_fp: dict[str, list[str]] = {}
    for r in runs:
        if r.fingerprint is not None:
            by_fp.setdefault(r.fingerprint, []).append(r.name)
    if len(by_fp) > 1:
        listed = "; ".join(f"{fp}: {', '.join(names)}" for fp, names in by_fp.items())
        fp, names = max(by_fp.items(), key=lambda kv: len(kv[1]))
        data = next((r.run.get("dataset_dir") for r in runs if r.fingerprint == fp and r.run.get("dataset_dir")),
                    "DIR")
        raise InputError(f"runs were evaluated on different datasets ({listed}): to compare them on dataset {fp}, "
                         f"run `ecgka evaluate RUN --data {data} --allow-other-dataset` for each run not on it, "
                         f"then `ecgka report ... --dataset {fp}`; or pass --group-by-dataset for one report per "
                         f"dataset")


def by_dataset(model: ReportModel) -> dict[str, ReportModel]:
    """One model per dataset the runs were evaluated on (fingerprint, or "unknown"), runs in model order."""
    out: dict[str, ReportModel] = {}
    for r in model.runs:
        fp = r.fingerprint or "unknown"
        out.setdefault(fp, ReportModel(split=model.split, runs=[], datasets={fp: model.datasets[fp]})).runs.append(r)
    return out


def collect(run_dirs, split: str = "test", dataset: str | None = None, one_dataset: bool = True) -> ReportModel:
    """Load every run; main runs are ordered as the paper's tables (each baseline, then + Dist Loss).
    ``one_dataset``: refuse runs evaluated on different datasets (a grouped report splits them instead)."""
    if not run_dirs:
        raise InputError("no run directories given")
    check_distinct(run_dirs)
    runs = [load_run(d, split, dataset) for d in run_dirs]
    if one_dataset:
        check_one_dataset(runs)
    _unique_names(runs)
    runs.sort(key=lambda r: (r.group != "main", natural_key(r.group), _order_key(r)))
    datasets: dict[str, DatasetInfo] = {}
    for r in runs:
        datasets.setdefault(r.fingerprint or "unknown", r.dataset)
    return ReportModel(split=split, runs=runs, datasets=datasets)
