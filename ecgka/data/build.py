"""``build_dataset``: ECG-Ka-DIR from a MIMIC-IV-ECG root and potassium lab exports.

Steps: read ``record_list.csv`` -> stream potassium labs -> pair -> signal stage in chunks (any executor)
-> subject-disjoint splits -> shards, exclusions, variants, manifest. Intermediate results live in the work
folder of the build's fingerprint (``ecgka.catalog.WorkDir``, written atomically), so an interrupted build
resumes; a complete build with the same fingerprint is skipped. Every file name comes from the catalog.
With ``previous`` the build is a new version of that dataset (``ecgka.data.dataset_versions``: labs merged, ECGs
reused, splits kept).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ecgka.catalog import FOLDER_MARKER, Claim, ClaimState, DatasetDir, FolderKind, WorkDir, claim_folder
from ecgka.data.assemble import EmptyBuildError, assemble
from ecgka.data.config import BuildConfig
from ecgka.data.dataset_versions import (
    REUSE_COLUMNS,
    Previous,
    Version,
    export_entry,
    inherit_config,
    load_previous,
    reuse_plan,
)
from ecgka.data.executors import dask_client_class, default_workers, make_executor
from ecgka.data.labs import (
    ItemSelection,
    LabTable,
    extract_labs,
    lab_file_columns,
    lab_format,
    select_items,
)
from ecgka.data.manifest import dataset_fingerprint
from ecgka.data.pairing import pair_labs
from ecgka.data.record_list import RECORD_LIST, read_record_list
from ecgka.data.signal_stage import TASK_COLUMNS, ChunkTask, run_chunk
from ecgka.data.subgroups import SubgroupSources, subgroup_frame
from ecgka.errors import ConfigError, InputError
from ecgka.io import atomic_path, atomic_write_json, file_fingerprint, read_json, remove_stale_temps
from ecgka.progress import progress_bar


def fingerprint_inputs(ecg_root: Path, lab_files: list[Path], d_labitems: Path | None) -> dict[str, Any]:
    return {
        "ecg_root": str(ecg_root),
        "record_list": file_fingerprint(ecg_root / RECORD_LIST),
        "labs": [file_fingerprint(p) for p in lab_files],
        "d_labitems": file_fingerprint(d_labitems) if d_labitems else None,
    }


def _check_inputs(ecg_root: Path, lab_files: list[Path], cfg: BuildConfig) -> pd.DataFrame:
    """Fail at once on missing files or columns; return the validated record list."""
    if not ecg_root.is_dir():
        raise InputError(f"{ecg_root}: ECG root folder not found")
    if not lab_files:
        raise InputError("no lab file given (--labs FILE)")
    records = read_record_list(ecg_root)
    for path in lab_files:
        lab_format(path, lab_file_columns(path), cfg.labs)
    return records


def _items(cfg: BuildConfig, d_labitems: Path | None, prev: Previous | None) -> ItemSelection:
    """The potassium items: from ``d_labitems`` when given, else the previous version's, else the config's."""
    if prev is None or d_labitems is not None:
        return select_items(cfg.labs, d_labitems)
    items = prev.manifest["labs"]["items"]
    return ItemSelection(tuple(items["primary"]), tuple(items["secondary"]), tuple(items["other_fluid"]))


def _add_stats(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Counts of the previous version plus those of the new exports (numbers added, lists joined)."""
    out = dict(old)
    for key, value in new.items():
        out[key] = out.get(key, 0 if not isinstance(value, list) else []) + value
    return out


def _extract(lab_files: list[Path], cfg: BuildConfig, items: ItemSelection, prev: Previous | None, progress: bool):
    """The potassium table and its stats: the exports' rows, merged into the previous version's rows."""
    out = extract_labs(lab_files, cfg.labs, items, base=prev.labs if prev is not None else None, progress=progress)
    out.seen |= {k: v for k, v in out.changes.items() if k.startswith("withdrawn_")}  # labs withdrawn, by reason
    if prev is None:
        return out.table, out.dropped, out.seen, out.changes
    old_rows = {k: v for k, v in prev.manifest.get("labs", {}).items() if k != "items"}
    seen = _add_stats(old_rows, {k: v for k, v in out.seen.items() if k != "kept"}) | {"kept": len(out.table)}
    return out.table, _add_stats(prev.manifest.get("labs_dropped", {}), out.dropped), seen, out.changes


def _labs(work: WorkDir, lab_files: list[Path], cfg: BuildConfig, d_labitems: Path | None, prev: Previous | None,
          progress: bool):
    """The potassium table, cached in the work folder."""
    items = _items(cfg, d_labitems, prev)
    cache, info = work.labs, work.lab_stats
    if cache.is_file() and info.is_file():
        return LabTable.load(cache), read_json(info), items
    table, dropped, seen, changes = _extract(lab_files, cfg, items, prev, progress)
    with atomic_path(cache) as tmp:
        table.save(tmp)
    stats = {"dropped": dropped, "rows": seen, "changes": changes, "items": {"primary": list(items.primary),
             "secondary": list(items.secondary), "other_fluid": list(items.other_fluid)}}
    atomic_write_json(info, stats)
    return table, stats, items


def _new_exports(lab_files: list[Path], inputs: dict[str, Any], prev: Previous | None
                 ) -> tuple[list[Path], list[dict[str, Any]]]:
    """The lab files to read (an export the previous version already holds counts once) and the version's
    exports: the previous version's plus the new ones."""
    exports = list(prev.exports) if prev else []
    files = []
    for path, fp in zip(lab_files, inputs["labs"], strict=True):
        if fp["sha256"] not in {e["sha256"] for e in exports}:
            exports.append(export_entry(fp))
            files.append(path)
    return files, exports


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _prepare(ds: DatasetDir, fingerprint: str) -> WorkDir:
    """The work folder of this build, after removing the work folders of other fingerprints (so no stale
    file stays in the shard glob)."""
    if ds.work_root.is_dir():
        for other in ds.work_root.iterdir():
            if other != ds.work_dir(fingerprint):
                _remove(other)
    work = ds.work(fingerprint)
    work.chunks_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(work.path)
    remove_stale_temps(work.chunks_dir)
    return work


def _replace_other(ds: DatasetDir, claim: Claim, fingerprint: str, force: bool) -> str | None:
    """Empty the folder when it holds another dataset (a complete one only with ``force``) or an unfinished
    build of other inputs; keep an unfinished build of this fingerprint (it resumes). Returns the console
    line saying what was replaced, or None."""
    old = ds.manifest_or_none()
    if old is not None and old.get("fingerprint") != fingerprint:
        claim.check_replace(fingerprint, force=force, what=f"dataset {old.get('fingerprint')}")
        claim.clear()
        return f"{ds.path}: replaced dataset {old.get('fingerprint')} (--force)"
    resumable = old is not None or ds.work_dir(fingerprint).is_dir()
    if claim.path.is_dir() and not resumable and any(p.name != FOLDER_MARKER for p in claim.path.iterdir()):
        claim.clear()
        return f"{ds.path}: removed an unfinished build of other inputs"
    return None


def _tasks(paired: pd.DataFrame, ecg_root: Path, work: WorkDir, cfg: BuildConfig, prev: Previous | None,
           log: Any) -> list[ChunkTask]:
    size = cfg.shards.chunk_records
    cfg_dict = cfg.model_dump(mode="json")
    recs = paired[TASK_COLUMNS].sort_values("row", ignore_index=True)
    recs = recs.astype({"lab_time_s": np.int64, "itemid": np.int32, "potassium": np.float32})
    if prev is not None:
        same = prev.same_signal(cfg)
        if not same:
            log(f"signal config differs from the previous version {prev.ds.path}: every ECG is read again")
        recs = pd.concat([recs, reuse_plan(recs, prev, same)[REUSE_COLUMNS]], axis=1)
    where = str(prev.ds.path.resolve()) if prev is not None else None
    return [ChunkTask(i, str(ecg_root), str(work.path), recs.iloc[start:start + size].reset_index(drop=True), cfg_dict,
                      where) for i, start in enumerate(range(0, len(recs), size))]


def _run_signal_stage(tasks: list[ChunkTask], workers: int | None, dask_scheduler: Any, progress: bool
                      ) -> dict[str, float]:

    todo = [t for t in tasks if not t.done]
    stats = {"chunks": len(tasks), "resumed": len(tasks) - len(todo), "seconds": 0.0, "read": 0, "reused": 0}
    if not todo:
        return stats
    executor = make_executor(workers if len(todo) > 1 or dask_scheduler is not None else 1, dask_scheduler)
    try:
        with progress_bar(progress=progress, lines=True, total=sum(len(t.records) for t in todo), unit=" ecg",
                          desc="signals") as bar:
            for result in executor.map_unordered(run_chunk, todo):
                stats["seconds"] += result.get("seconds", 0.0)
                stats["read"] += result.get("read", 0)
                stats["reused"] += result.get("reused", 0)
                bar.update(result.get("kept", 0) + result.get("excluded", 0))
    finally:
        executor.close()
    return stats


def build_dataset(ecg_root: str | Path, lab_files: list[str | Path], out_dir: str | Path,
                  cfg: BuildConfig | None = None, workers: int | None = 1, dask_scheduler: Any = None,
                  d_labitems: str | Path | None = None, progress: bool = False, force: bool = False,
                  log: Any = None, previous: str | Path | None = None, patients: str | Path | None = None,
                  transfers: str | Path | None = None) -> dict[str, Any]:
    """Build (or resume, or skip) the dataset in ``out_dir``; return the manifest plus ``status``.

    ``workers``: local processes for the signal stage (None: every CPU); ``dask_scheduler``: a Dask scheduler
    address or ``Client`` instead (its workers must see ``ecg_root`` and ``out_dir``). ``out_dir`` must be
    missing, empty or a dataset folder (``ecgka.catalog.claim_folder``); a complete dataset of another
    fingerprint is replaced only with ``force``. ``log`` (a callable) receives what was replaced.
    ``previous``: a dataset version this one extends (``ecgka.data.dataset_versions``): its potassium rows join the
    new exports', its ECGs are reused and its subjects keep their splits.
    ``patients`` / ``transfers``: MIMIC-IV hosp tables for the subgroup columns (default: those beside the first lab
    file, when present; ``ecgka.data.subgroups``).
    """
    start = time.perf_counter()
    log = log or (lambda line: None)
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ConfigError(f"--workers must be at least 1, got {workers!r}")  # before the folder is touched
    if dask_scheduler is not None:
        dask_client_class()  # Dask missing: the install hint before any work, not after the labs
    ds = DatasetDir(out_dir)
    claim = claim_folder(ds.path, FolderKind.DATASET)  # before hashing inputs: a wrong --out fails at once
    prev, config_changes = None, {}
    if previous is not None:  # a version starts from its parent's resolved config; explicit keys override it
        prev = load_previous(previous, ds.path)
        cfg, config_changes = inherit_config(prev, cfg)
        for key, change in config_changes.items():
            log(f"config: {key}={change['child']} (the parent {prev.ds.path} has {change['parent']})")
    cfg = cfg or BuildConfig()
    plan = _plan(Path(ecg_root), [Path(p) for p in lab_files], Path(d_labitems) if d_labitems else None,
                 prev, ds.path, cfg, config_changes,
                 SubgroupSources.find([Path(p) for p in lab_files], patients and Path(patients),
                                      transfers and Path(transfers)))
    _take_folder(ds, claim, plan.fingerprint, force, log)
    if ds.is_complete(plan.fingerprint):
        return {**ds.read_manifest(), "status": "skipped", "seconds": time.perf_counter() - start}
    manifest = _build(ds, plan, cfg, workers, dask_scheduler, progress, log)
    return {**manifest, "status": "built", "seconds": time.perf_counter() - start}


@dataclass(frozen=True)
class BuildPlan:
    """What a build is made from, known before any work: the inputs, their fingerprint, the parent version."""

    ecg_root: Path
    records: pd.DataFrame
    d_labitems: Path | None
    inputs: dict[str, Any]
    new_files: list[Path]
    exports: list[dict[str, Any]]
    fingerprint: str
    prev: Any  # ecgka.data.dataset_versions.Previous or None
    config_changes: dict[str, Any]  # overrides of the parent's config (dataset_versions.inherit_config)
    subgroups: SubgroupSources = SubgroupSources()  # patients / transfers tables (ecgka.data.subgroups)
    lab_files: tuple[Path, ...] = ()  # every lab export given (creatinine for the eGFR stage)


def _plan(ecg_root: Path, lab_files: list[Path], d_labitems: Path | None, prev: Previous | None,
          out_dir: Path, cfg: BuildConfig, config_changes: dict[str, Any],
          subgroups: SubgroupSources = SubgroupSources()) -> BuildPlan:
    """Check the inputs (one-line errors) and fingerprint them."""
    records = _check_inputs(ecg_root, lab_files, cfg)
    inputs = fingerprint_inputs(ecg_root, lab_files, d_labitems)
    if prev is not None:
        inputs["previous"] = {"path": str(prev.ds.path.resolve()), "digest": prev.digest}
    new_files, exports = _new_exports(lab_files, inputs, prev)
    tables = {k: file_fingerprint(p) for k, p in (("patients", subgroups.patients), ("transfers", subgroups.transfers))
              if p is not None and p.is_file()}
    if tables:  # only then: a build without the tables keeps its fingerprint
        inputs["subgroups"] = tables
    return BuildPlan(ecg_root, records, d_labitems, inputs, new_files, exports, dataset_fingerprint(cfg, inputs),
                     prev, config_changes, subgroups, tuple(lab_files))


def _drop_work(ds: DatasetDir, cfg: BuildConfig) -> None:
    if not cfg.keep_work:
        shutil.rmtree(ds.work_root, ignore_errors=True)


def _take_folder(ds: DatasetDir, claim: Any, fingerprint: str, force: bool, log: Any) -> None:
    """Say what was replaced, and mark the folder as this fingerprint's dataset."""
    note = _replace_other(ds, claim, fingerprint, force)
    if note:
        log(note)
    if claim.content != fingerprint or claim.state is not ClaimState.SAME_KIND:
        claim.write_marker(fingerprint)


def _build(ds: DatasetDir, plan: BuildPlan, cfg: BuildConfig, workers: int | None, dask_scheduler: Any,
           progress: bool, log: Any) -> dict[str, Any]:
    """Labs, pairs, the signal stage and the assembly into the folder; the work folder is removed after."""
    work, prev = _prepare(ds, plan.fingerprint), plan.prev
    try:
        labs, lab_stats, items = _labs(work, plan.new_files, cfg, plan.d_labitems, prev, progress)
    except InputError:  # an export that yields nothing: no version (the folder keeps only its marker)
        shutil.rmtree(ds.work_root, ignore_errors=True)
        raise
    candidates = plan.records[plan.records["reason"] == ""]
    paired = pair_labs(candidates, labs, items.primary, items.secondary, cfg.pairing)
    has_lab = paired["lab_time_s"].notna().to_numpy()
    tasks = _tasks(paired[has_lab], plan.ecg_root, work, cfg, prev, log)
    stage = _run_signal_stage(tasks, workers, dask_scheduler, progress)
    stage |= _reuse_counts(tasks)
    no_lab = paired.loc[~has_lab, "row"].to_numpy(np.int64)
    salt = prev.manifest["split_salt"] if prev else plan.fingerprint
    version = Version(plan.exports, salt, labs, prev, lab_stats.get("changes", {}), plan.config_changes)
    n_workers = workers if workers is not None else default_workers()
    build_info = {**stage, "executor": "dask" if dask_scheduler is not None else f"process x{n_workers}"}
    ecgs = paired.loc[has_lab, ["row", "subject_id", "time_s"]].rename(columns={"row": "sample_id"})
    subgroups = subgroup_frame(ecgs, plan.subgroups, list(plan.lab_files))
    try:
        manifest = assemble(ds, plan.records, no_lab, [t.part_dir for t in tasks], cfg, plan.fingerprint,
                            plan.inputs, lab_stats, version, progress, build_info, subgroups)
    except EmptyBuildError:  # left on disk: the marker and the ledger (exclusions.csv), no manifest
        _drop_work(ds, cfg)
        raise
    _drop_work(ds, cfg)  # any other failure keeps the work folder: the next run resumes from it
    return manifest


def _reuse_counts(tasks: list[ChunkTask]) -> dict[str, int]:
    """``reused``: ECGs whose signal was taken from the previous version's shards; ``not_read``: records whose
    previous exclusion (a signal reason, or a held-out subject's other ECG) was kept without reading them."""
    reused = not_read = 0
    for t in tasks:
        if "prev_sample_id" in t.records:
            carried = t.records["prev_reason"].to_numpy() != ""
            reused += int(((t.records["prev_sample_id"].to_numpy() >= 0) & ~carried).sum())
            not_read += int(carried.sum())
    return {"reused": reused, "not_read": not_read}
