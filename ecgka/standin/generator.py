"""Orchestration of ``ecgka synth``: plan the subjects, synthesise the ECGs in a process pool while a thread
streams the lab tables, and write the MIMIC root CSVs; all in a temporary sibling renamed at the end.

Determinism: every random draw comes from ``SeedSequence(seed, spawn_key=(stream, subject, ...))`` and
every table is written in subject_id order, so the bytes depend only on (subjects, seed), never on
``workers`` or on the order in which workers finish. Memory stays bounded: subjects are re-planned
(cheap, deterministic) where needed instead of being held, and results are written as they arrive.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import multiprocessing as mp
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from ecgka.catalog import Claim, ClaimState, FolderKind, claim_folder
from ecgka.errors import InputError
from ecgka.io import atomic_path, file_fingerprint
from ecgka.processes import signals_held
from ecgka.standin.hosp import PATIENT_COLUMNS, TRANSFER_COLUMNS, subject_hosp_rows
from ecgka.standin.ids import N_CARTS, Ids
from ecgka.standin.labs import (
    D_LABITEMS_COLUMNS,
    K_CHEM,
    K_CHEM_NEW,
    K_GAS,
    LAB_COLUMNS,
    d_labitems_rows,
    subject_lab_rows,
)
from ecgka.standin.measurements import MEASUREMENT_COLUMNS, measurement_row
from ecgka.standin.noise import dropouts
from ecgka.standin.physiology import synthesize
from ecgka.standin.timeline import plan_subject
from ecgka.standin.wfdb_writer import INVALID, record_path, to_digital, write_record

RECORD_LIST_COLUMNS = ("subject_id", "study_id", "file_name", "ecg_time", "path")
NOTE_LINK_COLUMNS = ("subject_id", "study_id", "waveform_path", "note_id", "note_seq", "charttime")
NOTE_LINK_RATE = 0.4  # share of ECGs linked to a (credentialed, not included) MIMIC-IV-Note report
MAX_SUBJECTS = 1_000_000
MAX_WORKERS = 256
CHUNK_RECORDS = 64  # records per worker task: small enough to stream, large enough to amortise
Progress = Callable[[int, int], None]  # (records done, records in total)
SUMS_PART = "record-sums.part"
ECG_DIR = "ecg"  # MIMIC-IV-ECG root of the stand-in (record_list.csv, files/...)
HOSP_DIR = "hosp"  # MIMIC-IV hosp tables
RECORD_LIST = "record_list.csv"
LABEVENTS = "labevents.csv.gz"
D_LABITEMS = "d_labitems.csv.gz"
PATIENTS = "patients.csv.gz"
TRANSFERS = "transfers.csv.gz"


def standin_complete(out_dir: str | Path) -> bool:
    """Whether ``out_dir`` holds a finished stand-in (it is written atomically; its record list is there)."""
    return (Path(out_dir) / ECG_DIR / RECORD_LIST).is_file()


def check_args(out_dir: str | Path, subjects: int, seed: int, workers: int | None, force: bool = False) -> Claim:
    """Validate before anything is written; raise InputError with a one-line reason."""
    out = Path(out_dir)
    if not isinstance(subjects, int) or not 1 <= subjects <= MAX_SUBJECTS:
        raise InputError(f"--subjects must be an integer from 1 to {MAX_SUBJECTS}, got {subjects!r}")
    if not isinstance(seed, int) or seed < 0:
        raise InputError(f"--seed must be a non-negative integer, got {seed!r}")
    if workers is not None and (not isinstance(workers, int) or not 1 <= workers <= MAX_WORKERS):
        raise InputError(f"--workers must be an integer from 1 to {MAX_WORKERS}, got {workers!r}")
    claim = claim_folder(out, FolderKind.STANDIN)  # a file, a foreign or another kind of folder: refused
    if claim.state is not ClaimState.NEW and not force:
        raise InputError(f"{out}: holds a stand-in already; pass --force to replace it, or choose another --out")
    parent = out.parent.resolve()
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"{parent}: is a file, cannot write the stand-in below it")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{parent}: folder is not writable")
    return claim


def _synth_chunk(seed: int, ecg_root: str, tasks: list[tuple]) -> tuple[list[list], list[tuple[str, str]]]:
    """Worker: synthesise and write the records of some subjects; return their machine_measurements rows
    and the (path, sha256) of the files written."""
    rows, digests = [], []
    for index, subject_id, records in tasks:
        plan = plan_subject(index, seed)
        for j, study_id, when, cart_id in records:
            rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, index, j)))
            signal, meas = synthesize(float(plan.ecg_k[j]), plan.traits, rng)
            quirks = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(7, index, j)))
            digital = dropouts(to_digital(signal), quirks, INVALID)
            write_record(Path(ecg_root), subject_id, study_id, when, digital, digests)
            rows.append(measurement_row(subject_id, study_id, cart_id, f"{when:%Y-%m-%d %H:%M:%S}", meas, seed))
    return rows, sorted(digests)


def _ecg_tasks(order: list[int], ids: Ids, seed: int) -> list[tuple]:
    """Per subject with ECGs: (index, subject_id, [(ecg index, study_id, recorded time, cart_id)]), in time order.

    The recorded time is the cart's clock (true time + the cart's offset), on whole minutes as in MIMIC.
    """
    tasks = []
    for index in order:
        plan = plan_subject(index, seed)
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(4, index)))
        carts = rng.integers(0, N_CARTS, plan.ecg_times.size)
        records = []
        for j in np.argsort(plan.ecg_times, kind="stable"):
            shown = plan.datetime_at(plan.ecg_times[j] + ids.cart_offset_min[carts[j]])
            records.append((int(j), ids.next_study(), shown.replace(second=0, microsecond=0), int(ids.cart_ids[carts[j]])))
        if records:
            tasks.append((index, ids.subject_id(index), records))
    return tasks


def _chunks(tasks: list[tuple]) -> list[list[tuple]]:
    """Consecutive groups of subjects with about CHUNK_RECORDS records each."""
    chunks, current, n = [], [], 0
    for task in tasks:
        current.append(task)
        n += len(task[2])
        if n >= CHUNK_RECORDS:
            chunks.append(current)
            current, n = [], 0
    return chunks + ([current] if current else [])


@contextlib.contextmanager
def _gzip_csv(path: Path) -> Iterator[csv.writer]:
    """A CSV writer into a gzip file with fixed header fields (mtime 0, no name): reproducible bytes."""
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz:
        with io.TextIOWrapper(gz, encoding="utf-8", newline="") as text:
            yield csv.writer(text, lineterminator="\n")


def _write_labs(hosp: Path, order: list[int], ids: Ids, seed: int, summary: dict, stop: threading.Event) -> None:
    """Stream labevents, patients and transfers one subject at a time (subject_id order) and write d_labitems;
    counts go to summary."""
    hosp.mkdir()  # not parents=True: never re-create a temporary folder that is being cleaned up
    n_rows = n_k = n_transfers = 0
    with _gzip_csv(hosp / LABEVENTS) as writer, _gzip_csv(hosp / PATIENTS) as pat_w, \
            _gzip_csv(hosp / TRANSFERS) as tr_w:
        writer.writerow(LAB_COLUMNS)
        pat_w.writerow(PATIENT_COLUMNS)
        tr_w.writerow(TRANSFER_COLUMNS)
        for index in order:
            if stop.is_set():
                return
            plan = plan_subject(index, seed)
            hadm = [ids.next_hadm() if ep.inpatient else None for ep in plan.episodes]
            rows = subject_lab_rows(plan, ids.subject_id(index), hadm, ids, seed)
            for r in rows:
                n_rows += 1
                r[0] = n_rows
                n_k += r[4] in (K_CHEM, K_GAS, K_CHEM_NEW)
            writer.writerows(rows)
            patient, transfers = subject_hosp_rows(plan, ids.subject_id(index), hadm, seed)
            for r in transfers:
                n_transfers += 1
                r[2] = 30_000_000 + n_transfers
            pat_w.writerow(patient)
            tr_w.writerows(transfers)
    with _gzip_csv(hosp / D_LABITEMS) as writer:
        writer.writerows([D_LABITEMS_COLUMNS, *d_labitems_rows()])
    summary.update(lab_rows=n_rows, potassium_labs=n_k)


def _open_csv(path: Path, header: Iterable[str]):
    fh = open(path, "w", newline="", encoding="utf-8")
    writer = csv.writer(fh, lineterminator="\n")
    writer.writerow(header)
    return fh, writer


def _write_csv(path: Path, header: Iterable[str], rows: Iterable[list]) -> None:
    fh, writer = _open_csv(path, header)
    with fh:
        writer.writerows(rows)


def _record_rows(tasks: list[tuple]) -> Iterator[list]:
    for _, subject_id, records in tasks:
        for _, study_id, when, _ in records:
            yield [subject_id, study_id, study_id, f"{when:%Y-%m-%d %H:%M:%S}", record_path(subject_id, study_id)]


def _note_link_rows(tasks: list[tuple], seed: int) -> Iterator[list]:
    """``waveform_note_links.csv``: some ECGs point to a free-text report note of the same subject."""
    for index, subject_id, records in tasks:
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(6, index)))
        linked = rng.random(len(records)) < NOTE_LINK_RATE
        for seq, ((_, study_id, when, _), keep) in enumerate(zip(records, linked, strict=True), start=1):
            if keep:
                stamp = f"{when:%Y-%m-%d %H:%M:%S}"
                yield [subject_id, study_id, record_path(subject_id, study_id), f"{subject_id}-EK-{seq}", seq, stamp]


def _synthesise_all(ecg: Path, chunks: list[list[tuple]], seed: int, workers: int) -> Iterator[tuple]:
    """(measurement rows, file digests) of each chunk, in chunk order (workers may finish in any order)."""
    if workers == 1 or len(chunks) <= 1:
        for chunk in chunks:
            yield _synth_chunk(seed, str(ecg), chunk)
        return
    # spawn: safe when the caller has threads (torch, the lab writer thread); never more workers than tasks
    with ProcessPoolExecutor(min(workers, len(chunks)), mp_context=mp.get_context("spawn")) as pool:
        futures = []
        try:
            with signals_held():  # submitting starts the workers (ecgka.processes)
                futures.extend(pool.submit(_synth_chunk, seed, str(ecg), c) for c in chunks)
            for future in futures:
                yield future.result()
        finally:
            for future in futures:
                future.cancel()


def _write_tree(tmp: Path, subjects: int, seed: int, workers: int, progress: Progress | None) -> dict:
    ids = Ids(seed)
    order = ids.subject_order(subjects)
    ecg = tmp / ECG_DIR
    ecg.mkdir(parents=True)
    tasks = _ecg_tasks(order, ids, seed)
    total = sum(len(t[2]) for t in tasks)
    summary: dict = {"subjects_with_ecg": len(tasks), "records": total}
    labs = _LabThread(tmp / HOSP_DIR, order, ids, seed, summary)
    labs.start()  # overlaps with the ECG workers (the main process mostly waits on them)
    try:
        fh, writer = _open_csv(ecg / "machine_measurements.csv", MEASUREMENT_COLUMNS)
        sums = open(tmp / SUMS_PART, "w", encoding="ascii")  # record files, in path order
        with fh, sums:
            done = 0
            for rows, digests in _synthesise_all(ecg, _chunks(tasks), seed, workers):
                writer.writerows(rows)
                sums.writelines(f"{h} {p}\n" for p, h in digests)
                done += len(rows)
                if progress:
                    progress(done, total)
    except BaseException:
        labs.stop.set()  # let the thread end before the temporary folder is removed
        labs.join()
        raise
    labs.finish()
    _write_csv(ecg / RECORD_LIST, RECORD_LIST_COLUMNS, _record_rows(tasks))
    _write_csv(ecg / "waveform_note_links.csv", NOTE_LINK_COLUMNS, _note_link_rows(tasks, seed))
    _write_sha256sums(ecg, tmp / SUMS_PART)
    return summary


def _write_sha256sums(ecg: Path, record_sums: Path) -> None:
    """``ecg/SHA256SUMS.txt`` as PhysioNet ships it: ``<sha256> <path>`` for every file, sorted by path."""
    with open(ecg / "SHA256SUMS.txt", "w", encoding="ascii") as out:
        with open(record_sums, encoding="ascii") as fh:
            for line in fh:  # files/... sort before the root CSVs (f < m < r < w)
                out.write(line)
        for name in sorted(p.name for p in ecg.glob("*.csv")):
            out.write(f"{file_fingerprint(ecg / name)['sha256']} {name}\n")
    record_sums.unlink()


class _LabThread(threading.Thread):
    """Writes the lab tables; re-raises its error in the main thread on ``finish``."""

    def __init__(self, *args) -> None:
        super().__init__(daemon=True)
        self.args, self.error, self.stop = args, None, threading.Event()

    def run(self) -> None:
        try:
            _write_labs(*self.args, self.stop)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            self.error = exc

    def finish(self) -> None:
        self.join()
        if self.error is not None:
            raise self.error


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def generate_standin(
    out_dir: str | Path, subjects: int = 200, seed: int = 0, workers: int | None = None, *,
    progress: Progress | None = None, force: bool = False,
) -> dict:
    """Write a MIMIC-IV-ECG + MIMIC-IV hosp stand-in to ``out_dir`` (new or empty; a stand-in folder only with
    ``force``, replaced as a whole); return a summary.

    ``progress(done, total)`` is called as ECG records are finished (e.g. to drive a progress bar).
    """
    claim = check_args(out_dir, subjects, seed, workers, force)
    out = claim.path
    workers = workers or default_workers()
    start = time.perf_counter()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out) as tmp:
            summary = _write_tree(tmp, subjects, seed, workers, progress)
            claim.write_marker(f"subjects={subjects} seed={seed}", root=tmp)
    except OSError as exc:  # e.g. read-only or full file system: nothing is left behind by atomic_path
        raise InputError(f"{out}: cannot write the stand-in ({exc.strerror or exc})") from None
    return {"out": str(out), "subjects": subjects, **summary, "seconds": round(time.perf_counter() - start, 2),
            "workers": workers}
