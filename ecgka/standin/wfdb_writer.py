"""Write one MIMIC-IV-ECG record: the exact header text and the format-16 ``.dat`` bytes.

The header is written line for line like the real files (``../shared/reference/mimic-iv.md``):
``STUDY 12 500 5000 HH:MM:SS DD/MM/YYYY``, one signal line per lead with the WFDB initial value (first
sample) and checksum (sum of the samples modulo 65536, as WFDB computes it), then
``# <subject_id>: SUBJECT``. We write the bytes ourselves because ``wfdb.wrsamp`` is slow and writes a
different header layout (no ``200.0(0)`` gain text, no date).
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from pathlib import Path

import numpy as np

LEADS: tuple[str, ...] = ("I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6")
FS = 500
N_SAMPLES = 5000
GAIN = 200.0  # adu per mV
INVALID = -32768  # WFDB's invalid sample for format 16 (read back as NaN)


def record_path(subject_id: int, study_id: int) -> str:
    """Path of a record relative to the ECG root, without extension (as in ``record_list.csv``)."""
    s = str(subject_id)
    return f"files/p{s[:4]}/p{s}/s{study_id}/{study_id}"


def to_digital(signal_mv: np.ndarray) -> np.ndarray:
    """Physical [samples, leads] mV -> int16 adu (200/mV, baseline 0), clipped below the invalid value."""
    adu = np.rint(np.asarray(signal_mv, dtype=np.float64) * GAIN)
    return np.clip(adu, INVALID + 1, 32767).astype(np.int16)


def header_text(study_id: int, subject_id: int, base: datetime, digital: np.ndarray) -> str:
    """The ``.hea`` text for ``digital`` [samples, leads] int16, in the real MIMIC-IV-ECG layout."""
    n_samples, n_leads = digital.shape
    first = digital[0].astype(np.int64)
    checksum = digital.astype(np.int64).sum(axis=0) % 65536
    lines = [f"{study_id} {n_leads} {FS} {n_samples} {base:%H:%M:%S} {base:%d/%m/%Y}"]
    lines += [
        f"{study_id}.dat 16 200.0(0)/mV 16 0 {int(first[i])} {int(checksum[i])} 0 {LEADS[i]}"
        for i in range(n_leads)
    ]
    lines.append(f"# <subject_id>: {subject_id}")
    return "\n".join(lines) + "\n"


def write_record(
    root: Path, subject_id: int, study_id: int, base: datetime, digital: np.ndarray,
    digests: list[tuple[str, str]] | None = None,
) -> Path:
    """Write ``STUDY.hea`` and ``STUDY.dat`` (little-endian int16, interleaved) under ``root``.

    ``digests`` (optional) receives ``(relative path, sha256)`` of both files, for ``SHA256SUMS.txt``.
    """
    if digital.shape != (N_SAMPLES, len(LEADS)) or digital.dtype != np.int16:
        raise ValueError(f"record {study_id}: expected int16 [{N_SAMPLES}, {len(LEADS)}], got {digital.shape}")
    rel = record_path(subject_id, study_id)
    stem = root / rel
    stem.parent.mkdir(parents=True, exist_ok=True)
    files = {
        ".dat": digital.astype("<i2").tobytes(order="C"),
        ".hea": header_text(study_id, subject_id, base, digital).encode("ascii"),
    }
    for suffix, data in files.items():
        stem.with_suffix(suffix).write_bytes(data)
        if digests is not None:
            digests.append((rel + suffix, hashlib.sha256(data).hexdigest()))
    return stem
