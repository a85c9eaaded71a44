"""The signal stage of one work chunk: read, check and clean its records, write one work part.

A chunk is a fixed slice of the paired records (by ``sample_id``), so its output depends only on its
input, never on which worker ran it. The part is a folder written atomically with two Arrow IPC files
(names in ``ecgka.catalog.WorkDir``): the kept rows (shard schema) and the excluded ones (sample_id,
reason, detail). An existing part is reused on resume.

Only bad data becomes an exclusion: a :class:`RecordError` (the readers map wfdb's errors on bad files and
I/O errors to one). Any other exception is a bug (or a broken environment), and excluding every record
for it would hide it: it stops the build as a :class:`SignalStageError`, one line naming the record (or
the chunk) and the error.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from ecgka.catalog import WorkDir
from ecgka.data.config import BuildConfig
from ecgka.data.mimic_reader import RecordError, read_record
from ecgka.data.record_list import resolve_record
from ecgka.data.shards import make_table, write_ipc
from ecgka.data.signal_qc import clean_batch, process_signal, to_stored
from ecgka.errors import EcgkaError
from ecgka.io import atomic_path

TASK_COLUMNS = ["row", "subject_id", "study_id", "path", "time_s", "lab_time_s", "itemid", "potassium"]


class SignalStageError(EcgkaError):
    """An unexpected error (not bad data) in the signal stage: the build stops with this one line."""


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"[:300]


@dataclass
class ChunkTask:
    index: int
    ecg_root: str
    work_dir: str
    records: pd.DataFrame  # TASK_COLUMNS (+ versions.REUSE_COLUMNS with a previous version)
    cfg: dict  # BuildConfig as JSON-able dict (cheap to ship to Dask workers)
    previous: str | None = None  # the previous version's folder: signals of prev_sample_id >= 0 come from it

    @property
    def part_dir(self) -> Path:
        return WorkDir(self.work_dir).chunk(self.index)

    @property
    def done(self) -> bool:
        return WorkDir.rows(self.part_dir).is_file()


def _process_one(root: Path, path: str, cfg: BuildConfig) -> np.ndarray:
    sig = read_record(resolve_record(root, path), fast=cfg.signal.fast_reader, root=root)
    return process_signal(sig, cfg.signal)


def run_chunk(task: ChunkTask) -> dict:
    """Process one chunk (skipped when its part exists); return counts and seconds.

    Raises :class:`SignalStageError` on anything but bad data; no part is written then.
    """
    if task.done:
        return {"index": task.index, "skipped": True}
    try:
        return _run_chunk(task)
    except SignalStageError:
        raise
    except Exception as exc:
        raise SignalStageError(f"signal stage stopped in chunk {task.index} ({len(task.records)} records, work "
                               f"folder {task.work_dir}): {_one_line(exc)}") from None


def _carried(task: ChunkTask) -> tuple[np.ndarray, np.ndarray, list[tuple]]:
    """Records settled by the previous version, not read: positions whose signal it holds, positions of the
    exclusions it keeps, and those exclusions."""
    recs = task.records
    if "prev_sample_id" not in recs:
        return np.empty(0, np.int64), np.empty(0, np.int64), []
    reasons = recs["prev_reason"].to_numpy()
    kept_out = np.flatnonzero(reasons != "")
    excluded = [(int(recs["row"].iat[i]), reasons[i], str(recs["prev_detail"].iat[i])[:300]) for i in kept_out]
    return np.flatnonzero((recs["prev_sample_id"].to_numpy() >= 0) & (reasons == "")), kept_out, excluded


def _read_chunk(task: ChunkTask, cfg: BuildConfig, skip: set[int]) -> tuple[list[np.ndarray], list[int], list[tuple]]:
    """Every record of the chunk not in ``skip``: its signal, or its exclusion (bad data only)."""
    recs, root = task.records, Path(task.ecg_root)
    signals, kept, excluded = [], [], []
    for i, path in enumerate(recs["path"].to_numpy()):
        if i in skip:
            continue
        try:
            signals.append(_process_one(root, path, cfg))
            kept.append(i)
        except RecordError as exc:
            excluded.append((int(recs["row"].iat[i]), exc.reason, exc.detail[:300]))
        except Exception as exc:  # a bug would otherwise exclude every record with the same reason
            raise SignalStageError(f"signal stage stopped at record {path} (sample_id {int(recs['row'].iat[i])}, "
                                   f"chunk {task.index}): {_one_line(exc)}") from None
    return signals, kept, excluded


def _run_chunk(task: ChunkTask) -> dict:
    out = task.part_dir
    cfg = BuildConfig.model_validate(task.cfg)
    start = time.perf_counter()
    recs = task.records
    signal_len = len(cfg.signal.leads) * cfg.signal.n_samples
    reused, carried_pos, carried = _carried(task)
    signals, kept, excluded = _read_chunk(task, cfg, set(reused.tolist()) | set(carried_pos.tolist()))
    excluded += carried
    n_leads = len(cfg.signal.leads)
    raw = np.stack(signals) if signals else np.empty((0, n_leads, cfg.signal.n_samples))
    sig = to_stored(clean_batch(raw, cfg.signal.fs, cfg.signal)).reshape(len(kept), signal_len)
    if len(reused):
        from ecgka.data.dataset_versions import previous_signals

        old = previous_signals(task.previous, recs["prev_sample_id"].to_numpy()[reused])
        order = np.argsort(np.concatenate([kept, reused]), kind="stable")
        sig = np.concatenate([sig, old.astype(sig.dtype)])[order]
        kept = np.concatenate([np.asarray(kept, np.int64), reused])[order].tolist()
    sub = recs.iloc[kept]
    meta = {
        "sample_id": sub["row"].to_numpy(np.int64), "subject_id": sub["subject_id"].to_numpy(np.int64),
        "study_id": sub["study_id"].to_numpy(np.int64), "ecg_time_s": sub["time_s"].to_numpy(np.int64),
        "lab_time_s": sub["lab_time_s"].to_numpy(np.int64),
        "delta_minutes": ((sub["lab_time_s"] - sub["time_s"]).to_numpy(np.float64) / 60.0).astype(np.float32),
        "itemid": sub["itemid"].to_numpy(np.int32), "potassium": sub["potassium"].to_numpy(np.float32),
    }
    table = make_table(meta, sig, ",".join(cfg.signal.leads), cfg.signal.fs)
    exc_table = pa.table({
        "sample_id": pa.array([e[0] for e in excluded], pa.int64()),
        "reason": pa.array([e[1] for e in excluded], pa.string()),
        "detail": pa.array([e[2] for e in excluded], pa.string()),
    })
    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        write_ipc(table, WorkDir.rows(tmp))
        write_ipc(exc_table, WorkDir.excluded(tmp))
    return {"index": task.index, "skipped": False, "kept": len(kept), "excluded": len(excluded),
            "reused": len(reused) + len(carried), "read": len(signals) + len(excluded) - len(carried),
            "seconds": time.perf_counter() - start}
