"""Orchestration of ``ecgka synth``: plan every subject, synthesise the ECGs in a process pool while the
lab tables are streamed, then write the MIMIC root CSVs; all in a temporary sibling renamed at the end.

Determinism: every random draw comes from ``SeedSequence(seed, spawn_key=(stream, subject, ...))``, so
the bytes depend only on (subjects, seed), never on ``workers`` or on the order in which workers finish.
Ids are counters pushed through seeded affine bijections: unique, random-looking, no lookup tables.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import math
import multiprocessing as mp
import os
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ecgka.data.synth.labs import (
    D_LABITEMS_COLUMNS,
    K_CHEM,
    K_CHEM_NEW,
    K_GAS,
    LAB_COLUMNS,
    LabIds,
    d_labitems_rows,
    subject_lab_rows,
)
from ecgka.data.synth.measurements import MEASUREMENT_COLUMNS, measurement_row
from ecgka.data.synth.noise import dropouts
from ecgka.data.synth.physiology import synthesize
from ecgka.data.synth.timeline import SubjectPlan, plan_subject
from ecgka.data.synth.wfdb_writer import INVALID, record_path, to_digital, write_record
from ecgka.errors import InputError
from ecgka.io import atomic_path

RECORD_LIST_COLUMNS = ("subject_id", "study_id", "file_name", "ecg_time", "path")
NOTE_LINK_COLUMNS = ("subject_id", "study_id", "waveform_path", "note_id", "note_seq", "charttime")
NOTE_LINK_RATE = 0.4  # share of ECGs linked to a (credentialed, not included) MIMIC-IV-Note report
N_CARTS = 40
MAX_SUBJECTS = 5_000_000


def _affine(seed: int, tag: int, modulus: int) -> tuple[int, int]:
    """(a, b) with gcd(a, modulus) = 1: ``(a * n + b) % modulus`` is a bijection of counters n."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(3, tag)))
    while True:
        a = int(rng.integers(modulus // 3, modulus - 1))
        if math.gcd(a, modulus) == 1:
            return a, int(rng.integers(0, modulus))


@dataclass
class _Ids:
    seed: int

    def __post_init__(self) -> None:
        self.subject = _affine(self.seed, 0, 10_000_000)
        self.study = _affine(self.seed, 1, 10_000_000)
        self.hadm = _affine(self.seed, 2, 10_000_000)
        self.lab = LabIds(*_affine(self.seed, 3, 90_000_000))
        self.n_study = self.n_hadm = 0
        rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(3, 9)))
        self.cart_ids = rng.choice(np.arange(5000, 10000), N_CARTS, replace=False)
        # cart clocks are not synchronised with the hospital systems: minutes off, a few carts far off
        self.cart_offset = np.where(rng.random(N_CARTS) < 0.1, rng.normal(0, 25, N_CARTS), rng.normal(0, 3, N_CARTS))

    def subject_id(self, index: int) -> int:
        a, b = self.subject
        return (a * index + b) % 10_000_000 + 10_000_000

    def next_study(self) -> int:
        a, b = self.study
        self.n_study += 1
        return (a * self.n_study + b) % 10_000_000 + 40_000_000

    def next_hadm(self) -> int:
        a, b = self.hadm
        self.n_hadm += 1
        return (a * self.n_hadm + b) % 10_000_000 + 20_000_000


def check_args(out_dir: str | Path, subjects: int, seed: int, workers: int | None) -> Path:
    """Validate before anything is written; raise InputError with a one-line reason."""
    out = Path(out_dir)
    if not isinstance(subjects, int) or not 1 <= subjects <= MAX_SUBJECTS:
        raise InputError(f"--subjects must be an integer from 1 to {MAX_SUBJECTS}, got {subjects!r}")
    if not isinstance(seed, int) or seed < 0:
        raise InputError(f"--seed must be a non-negative integer, got {seed!r}")
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise InputError(f"--workers must be a positive integer, got {workers!r}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"{out}: output folder exists and is not empty (choose a new or empty folder)")
    parent = out.parent.resolve()
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"{parent}: is a file, cannot write the stand-in below it")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{parent}: folder is not writable")
    return out


def _synth_chunk(seed: int, ecg_root: str, tasks: list[tuple]) -> list[list]:
    """Worker: synthesise and write the records of some subjects; return their machine_measurements rows."""
    rows = []
    for index, subject_id, records in tasks:
        plan = plan_subject(index, seed)
        for j, study_id, when, cart_id in records:
            rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, index, j)))
            signal, meas = synthesize(float(plan.ecg_k[j]), plan.traits, rng)
            quirks = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(7, index, j)))
            digital = dropouts(to_digital(signal), quirks, INVALID)
            write_record(Path(ecg_root), subject_id, study_id, when, digital)
            rows.append(measurement_row(subject_id, study_id, cart_id, f"{when:%Y-%m-%d %H:%M:%S}", meas, seed))
    return rows


def _ecg_tasks(plans: list[SubjectPlan], ids: _Ids, seed: int) -> list[tuple]:
    """Per subject (index, subject_id, [(ecg index, study_id, recorded time, cart_id)]), in record order."""
    tasks = []
    for plan in plans:
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(4, plan.index)))
        carts = rng.integers(0, N_CARTS, plan.ecg_times.size)
        records = []
        for j in np.argsort(plan.ecg_times, kind="stable"):
            shown = plan.datetime_at(plan.ecg_times[j] + ids.cart_offset[carts[j]]).replace(second=0, microsecond=0)
            records.append((int(j), ids.next_study(), shown, int(ids.cart_ids[carts[j]])))
        tasks.append((plan.index, ids.subject_id(plan.index), records))
    return tasks


def _chunks(tasks: list[tuple], n: int) -> Iterator[list[tuple]]:
    size = max(1, math.ceil(len(tasks) / n))
    for i in range(0, len(tasks), size):
        yield tasks[i : i + size]


@contextlib.contextmanager
def _gzip_csv(path: Path) -> Iterator[csv.writer]:
    """A CSV writer into a gzip file with fixed header fields (mtime 0, no name): reproducible bytes."""
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz:
        with io.TextIOWrapper(gz, encoding="utf-8", newline="") as text:
            yield csv.writer(text, lineterminator="\n")


def _write_labs(hosp: Path, plans: list[SubjectPlan], ids: _Ids, seed: int) -> dict[str, int]:
    """Stream labevents (subjects in subject_id order, a chunk at a time) and write d_labitems."""
    hosp.mkdir(parents=True)
    n_rows = n_k = 0
    with _gzip_csv(hosp / "labevents.csv.gz") as writer:
        writer.writerow(LAB_COLUMNS)
        for plan in plans:  # one subject at a time: memory stays bounded
            hadm = [ids.next_hadm() if ep.inpatient else None for ep in plan.episodes]
            rows = subject_lab_rows(plan, ids.subject_id(plan.index), hadm, ids.lab, seed)
            for r in rows:
                n_rows += 1
                r[0] = n_rows
                n_k += r[4] in (K_CHEM, K_GAS, K_CHEM_NEW)
            writer.writerows(rows)
    with _gzip_csv(hosp / "d_labitems.csv.gz") as writer:
        writer.writerows([D_LABITEMS_COLUMNS, *d_labitems_rows()])
    return {"lab_rows": n_rows, "potassium_labs": n_k}


def _write_csv(path: Path, header: tuple, rows) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
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


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def generate_standin(out_dir: str | Path, subjects: int = 200, seed: int = 0, workers: int | None = None) -> dict:
    """Write a MIMIC-IV-ECG + MIMIC-IV hosp stand-in to ``out_dir`` (new or empty); return a summary."""
    out = check_args(out_dir, subjects, seed, workers)
    workers = workers or default_workers()
    start = time.perf_counter()
    ids = _Ids(seed)
    plans = sorted((plan_subject(i, seed) for i in range(subjects)), key=lambda p: ids.subject_id(p.index))
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tasks, lab_summary = _write_tree(out, plans, ids, seed, workers)
    except OSError as exc:  # e.g. read-only or full file system: nothing is left behind by atomic_path
        raise InputError(f"{out}: cannot write the stand-in ({exc.strerror or exc})") from None
    n_records = sum(len(t[2]) for t in tasks)
    return {
        "out": str(out), "subjects": subjects, "subjects_with_ecg": sum(1 for t in tasks if t[2]),
        "records": n_records, **lab_summary, "seconds": round(time.perf_counter() - start, 2), "workers": workers,
    }


def _write_tree(out: Path, plans: list[SubjectPlan], ids: _Ids, seed: int, workers: int) -> tuple[list, dict]:
    with atomic_path(out) as tmp:
        ecg = tmp / "ecg"
        ecg.mkdir(parents=True)
        tasks = _ecg_tasks(plans, ids, seed)
        chunks = list(_chunks([t for t in tasks if t[2]], max(1, workers) * 4))
        if workers == 1 or len(chunks) <= 1:
            lab_summary = _write_labs(tmp / "hosp", plans, ids, seed)
            measured = [_synth_chunk(seed, str(ecg), c) for c in chunks]
        else:
            with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
                futures = [pool.submit(_synth_chunk, seed, str(ecg), c) for c in chunks]
                lab_summary = _write_labs(tmp / "hosp", plans, ids, seed)  # overlaps with the workers
                measured = [f.result() for f in futures]
        _write_csv(ecg / "record_list.csv", RECORD_LIST_COLUMNS, _record_rows(tasks))
        _write_csv(ecg / "waveform_note_links.csv", NOTE_LINK_COLUMNS, _note_link_rows(tasks, seed))
        _write_csv(ecg / "machine_measurements.csv", MEASUREMENT_COLUMNS, (r for rows in measured for r in rows))
    return tasks, lab_summary
