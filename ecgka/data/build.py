"""``build_dataset``: ECG-Ka-DIR from a MIMIC-IV-ECG root and potassium lab exports.

Steps: read ``record_list.csv`` -> stream potassium labs -> pair -> signal stage in chunks (any executor)
-> subject-disjoint splits -> shards, exclusions, variants, manifest. Intermediate results live in the work
folder of the build's fingerprint (``ecgka.catalog.WorkDir``, written atomically), so an interrupted build
resumes; a complete build with the same fingerprint is skipped. Every file name comes from the catalog.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ecgka.catalog import FOLDER_MARKER, Claim, ClaimState, DatasetDir, FolderKind, WorkDir, claim_folder
from ecgka.data import labs as labs_mod
from ecgka.data.assemble import EmptyBuildError, assemble
from ecgka.data.config import BuildConfig
from ecgka.data.executors import dask_client_class, default_workers, make_executor
from ecgka.data.labs import LabTable, check_columns, extract_potassium, lab_file_columns, select_items
from ecgka.data.manifest import dataset_fingerprint
from ecgka.data.pairing import pair_labs
from ecgka.data.record_list import RECORD_LIST, read_record_list
from ecgka.data.signal_stage import TASK_COLUMNS, ChunkTask, run_chunk
from ecgka.errors import InputError
from ecgka.io import atomic_path, atomic_write_json, file_fingerprint, read_json, remove_stale_temps


def fingerprint_inputs(ecg_root: Path, lab_files: list[Path], d_labitems: Path | None) -> dict[str, Any]:
    return {
        "ecg_root": str(ecg_root),
        "record_list": file_fingerprint(ecg_root / RECORD_LIST),
        "labs": [file_fingerprint(p) for p in lab_files],
        "d_labitems": file_fingerprint(d_labitems) if d_labitems else None,
    }


def _check_inputs(ecg_root: Path, lab_files: list[Path]) -> pd.DataFrame:
    """Fail at once on missing files or columns; return the validated record list."""
    if not ecg_root.is_dir():
        raise InputError(f"{ecg_root}: ECG root folder not found")
    if not lab_files:
        raise InputError("no lab file given (--labs FILE)")
    records = read_record_list(ecg_root)
    for path in lab_files:
        check_columns(path, lab_file_columns(path), labs_mod.REQUIRED_COLUMNS)
    return records


def _labs(work: WorkDir, lab_files: list[Path], cfg: BuildConfig, d_labitems: Path | None, progress: bool):
    """The potassium table, cached in the work folder."""
    items = select_items(cfg.labs, d_labitems)
    cache, info = work.labs, work.lab_stats
    if cache.is_file() and info.is_file():
        return LabTable.load(cache), read_json(info), items
    table, dropped, seen = extract_potassium(lab_files, cfg.labs, items, progress=progress)
    with atomic_path(cache) as tmp:
        table.save(tmp)
    stats = {"dropped": dropped, "rows": seen, "items": {"primary": list(items.primary),
             "secondary": list(items.secondary), "other_fluid": list(items.other_fluid)}}
    atomic_write_json(info, stats)
    return table, stats, items


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _prepare(ds: DatasetDir, fingerprint: str) -> WorkDir:
    """The work folder of this build, after removing what must not outlive it: the old-layout (schema 1)
    entries and the work folders of other fingerprints (so no stale file stays in the shard glob)."""
    for path in ds.legacy_paths():
        _remove(path)
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
        return f"{ds.path}: removed an unfinished build of other inputs (or an old-layout dataset)"
    return None


def _tasks(paired: pd.DataFrame, ecg_root: Path, work: WorkDir, cfg: BuildConfig) -> list[ChunkTask]:
    size = cfg.shards.chunk_records
    cfg_dict = cfg.model_dump(mode="json")
    recs = paired[TASK_COLUMNS].sort_values("row", ignore_index=True)
    recs = recs.astype({"lab_time_s": np.int64, "itemid": np.int32, "potassium": np.float32})
    return [ChunkTask(i, str(ecg_root), str(work.path), recs.iloc[start:start + size].reset_index(drop=True), cfg_dict)
            for i, start in enumerate(range(0, len(recs), size))]


def _run_signal_stage(tasks: list[ChunkTask], workers: int | None, dask_scheduler: Any, progress: bool
                      ) -> dict[str, float]:
    from tqdm.auto import tqdm

    todo = [t for t in tasks if not t.done]
    stats = {"chunks": len(tasks), "resumed": len(tasks) - len(todo), "seconds": 0.0}
    if not todo:
        return stats
    executor = make_executor(workers if len(todo) > 1 or dask_scheduler is not None else 1, dask_scheduler)
    try:
        with tqdm(total=sum(len(t.records) for t in todo), unit=" ecg", desc="signals", disable=not progress) as bar:
            for result in executor.map_unordered(run_chunk, todo):
                stats["seconds"] += result.get("seconds", 0.0)
                bar.update(result.get("kept", 0) + result.get("excluded", 0))
    finally:
        executor.close()
    return stats


def build_dataset(ecg_root: str | Path, lab_files: list[str | Path], out_dir: str | Path,
                  cfg: BuildConfig | None = None, workers: int | None = 1, dask_scheduler: Any = None,
                  d_labitems: str | Path | None = None, progress: bool = False, force: bool = False,
                  log: Any = None) -> dict[str, Any]:
    """Build (or resume, or skip) the dataset in ``out_dir``; return the manifest plus ``status``.

    ``workers``: local processes for the signal stage (None: every CPU); ``dask_scheduler``: a Dask scheduler
    address or ``Client`` instead (its workers must see ``ecg_root`` and ``out_dir``). ``out_dir`` must be
    missing, empty or a dataset folder (``ecgka.catalog.claim_folder``); a complete dataset of another
    fingerprint is replaced only with ``force``. ``log`` (a callable) receives what was adopted or replaced.
    """
    start = time.perf_counter()
    log = log or (lambda line: None)
    if dask_scheduler is not None:
        dask_client_class()  # Dask missing: the install hint before any work, not after the labs
    cfg = cfg or BuildConfig()
    ecg_root, out_dir = Path(ecg_root), Path(out_dir)
    claim = claim_folder(out_dir, FolderKind.DATASET)  # before hashing inputs: a wrong --out fails at once
    lab_files = [Path(p) for p in lab_files]
    d_labitems = Path(d_labitems) if d_labitems else None
    records = _check_inputs(ecg_root, lab_files)
    inputs = fingerprint_inputs(ecg_root, lab_files, d_labitems)
    fingerprint = dataset_fingerprint(cfg, inputs)
    ds = DatasetDir(out_dir)
    for note in (claim.note, _replace_other(ds, claim, fingerprint, force)):
        if note:
            log(note)
    if claim.content != fingerprint or claim.state is not ClaimState.SAME_KIND:
        claim.write_marker(fingerprint)
    if ds.is_complete(fingerprint):
        return {**ds.read_manifest(), "status": "skipped", "seconds": time.perf_counter() - start}
    work = _prepare(ds, fingerprint)
    labs, lab_stats, items = _labs(work, lab_files, cfg, d_labitems, progress)
    candidates = records[records["reason"] == ""]
    paired = pair_labs(candidates, labs, items.primary, items.secondary, cfg.pairing)
    has_lab = paired["lab_time_s"].notna().to_numpy()
    tasks = _tasks(paired[has_lab], ecg_root, work, cfg)
    stage = _run_signal_stage(tasks, workers, dask_scheduler, progress)
    no_lab = paired.loc[~has_lab, "row"].to_numpy(np.int64)
    try:
        manifest = assemble(ds, records, no_lab, [t.part_dir for t in tasks], cfg, fingerprint, inputs, lab_stats,
                            progress)
    except EmptyBuildError:
        if not cfg.keep_work:  # left on disk: the marker and the ledger (exclusions.csv), no manifest
            shutil.rmtree(ds.work_root, ignore_errors=True)
        raise
    n_workers = workers if workers is not None else default_workers()
    manifest["build"] = {**stage, "executor": "dask" if dask_scheduler is not None else f"process x{n_workers}"}
    if not cfg.keep_work:
        shutil.rmtree(ds.work_root, ignore_errors=True)
    return {**manifest, "status": "built", "seconds": time.perf_counter() - start}
