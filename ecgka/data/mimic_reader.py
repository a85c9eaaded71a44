"""A fast reader for MIMIC-IV-ECG records, bit-identical to ``wfdb.rdrecord`` on what it accepts.

``wfdb.rdrecord`` spends ~5 ms per MIMIC record parsing the header; the samples read in ~0.02 ms. This
reader parses the simple header layout itself (single segment, one format-16 data file shared by all
signals, no skew, byte offset or multiple samples per frame, explicit non-zero gains) and reads the
``.dat`` with numpy, converting exactly as wfdb does (float64: (d - baseline) / gain; -32768 -> NaN).
Anything else goes to ``wfdb.rdrecord``. Failures are :class:`RecordError` with a reason code.

Both readers keep each signal's WFDB checksum: the header's checksum field (a 16-bit checksum of all the
stored samples of that signal) and the sum of the integer samples read, both modulo 65536, so that
:func:`ecgka.data.signal_qc.process_signal` can reject a record whose data is not what its header
describes (``checksum_mismatch``, e.g. format-16 data behind a header that says format 212).

Header file names are untrusted input: before either reader runs, every file a header names must be a
plain name in the record's folder that resolves inside the ECG root (``unsafe_path`` otherwise, unopened).
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_GAIN = re.compile(r"^([-+]?\d*\.?\d+(?:[eE][-+]?\d+)?)(?:\(([-+]?\d+)\))?(?:/(\S+))?$")
INVALID_16 = -32768
VERIFY_CHECKSUMS = True  # benchmarks/bench_build.py turns it off to measure the check's cost (sums included)


class RecordError(Exception):
    """A record that cannot be read; ``reason`` is an exclusion code."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


@dataclass
class Signal:
    """Physical samples [n_samples, n_sig] (float64, mV as in the header), lead names, rate."""

    p_signal: np.ndarray
    sig_name: list[str]
    fs: float
    units: list[str]
    reader: str  # "fast" or "wfdb"
    # per signal: (header checksum mod 65536, -1 where the header has none; sum of the samples mod 65536),
    # None when the samples cannot be checked (multi-segment or multi-frequency records)
    checksums: tuple[np.ndarray, np.ndarray] | None = None


@dataclass
class _Header:
    n_sig: int
    fs: float
    n_samples: int
    file_name: str
    gains: list[float]
    baselines: list[int]
    units: list[str]
    names: list[str]
    checksums: list[int]  # mod 65536 (-1: none in the header)


def _parse_header(text: str) -> _Header | None:
    """Parse the MIMIC header layout; None when the header uses anything this reader does not handle."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        return None
    rec = lines[0].split()
    if len(rec) < 4 or "/" in rec[0] or not rec[1].isdigit() or not rec[3].isdigit():
        return None
    try:
        fs = float(rec[2])
    except ValueError:
        return None
    n_sig, n_samples = int(rec[1]), int(rec[3])
    if n_sig < 1 or len(lines) != n_sig + 1 or fs <= 0 or n_samples < 1:
        return None
    files, gains, baselines, units, names, checksums = set(), [], [], [], [], []
    for line in lines[1:]:
        parts = line.split(maxsplit=8)
        if len(parts) != 9 or parts[1] != "16":
            return None
        match = _GAIN.match(parts[2])
        if match is None or float(match.group(1)) == 0 or match.group(3) is None or match.group(2) is None:
            return None
        if not re.fullmatch(r"[-+]?\d+", parts[6]):
            return None
        files.add(parts[0])
        gains.append(float(match.group(1)))
        baselines.append(int(match.group(2)))
        units.append(match.group(3))
        names.append(parts[8])
        checksums.append(int(parts[6]) % 65536)
    if len(files) != 1:
        return None
    return _Header(n_sig, fs, n_samples, files.pop(), gains, baselines, units, names, checksums)


def sample_checksums(digital: np.ndarray) -> np.ndarray:
    """WFDB checksum of every column of ``digital`` [samples, signals]: the sum of the stored integer samples
    (invalid values included) modulo 65536, accumulated in int64 (no overflow below 2**47 samples)."""
    return digital.sum(axis=0, dtype=np.int64) % 65536


def _header_checksums(values) -> np.ndarray:
    """A header's checksum fields modulo 65536 (signed or unsigned 16-bit in the file); -1 where absent."""
    return np.array([-1 if v is None else int(v) % 65536 for v in values], dtype=np.int64)


def _header_bytes(record: Path) -> bytes:
    hea = Path(f"{record}.hea")
    try:
        return hea.read_bytes()
    except FileNotFoundError:
        raise RecordError("file_missing", f"{hea.name} not found") from None
    except OSError as exc:
        raise RecordError("header_corrupt", str(exc)) from None


def read_header_text(record: Path, raw: bytes | None = None) -> str | None:
    """The header as text; None when it is not ASCII (then wfdb decides whether it is readable)."""
    try:
        return (raw if raw is not None else _header_bytes(record)).decode("ascii")
    except UnicodeDecodeError:
        return None


def header_file_names(text: str) -> tuple[bool, list[str]]:
    """Whether the header is multi-segment, and the first field of every line after the record line: each
    signal's file name (or each segment's record name). A minimal parse, done before any file is opened."""
    lines = [ln.split() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        return False, []
    return "/" in lines[0][0], [fields[0] for fields in lines[1:]]


def _is_plain_name(name: str) -> bool:
    return bool(name) and name not in {".", ".."} and not any(c in name for c in "/\\:")


@functools.lru_cache(maxsize=64)
def _real_folder(folder: str) -> str:
    """A folder with every symlink resolved (cached within one record: its files share a folder)."""
    return os.path.realpath(folder)


def check_inside(path: Path, root: Path, what: str) -> None:
    """``unsafe_path`` unless ``path`` (symlinks followed, nothing opened) lies inside ``root``."""
    path = Path(path)
    real_root = _real_folder(str(root))
    if os.path.islink(path):
        try:
            real = os.path.realpath(path, strict=True)
        except (OSError, RuntimeError) as exc:  # a dangling link or a loop
            raise RecordError("unsafe_path", f"{what} {path.name}: cannot resolve ({type(exc).__name__})") from None
    else:
        real = os.path.join(_real_folder(str(path.parent)), path.name)
    if os.path.commonpath([real_root, real]) != real_root:
        raise RecordError("unsafe_path", f"{what} {path.name} resolves outside {root}")


def check_header_names(record: Path, root: Path, raw: bytes | None = None, depth: int = 0) -> None:
    """Every file a header names must be a plain name in the record's folder and resolve inside ``root``;
    the headers of a multi-segment record's segments are checked the same way (``~`` is an empty segment)."""
    multi, names = header_file_names((raw if raw is not None else _header_bytes(record)).decode("latin-1"))
    for name in dict.fromkeys(names):  # MIMIC: 12 signal lines, one file
        if name == "~" and multi:
            continue
        if not name.isprintable():
            raise RecordError("header_corrupt", f"header names a file with control characters: {name!r}"[:200])
        if not _is_plain_name(name):
            raise RecordError("unsafe_path", f"header names {name!r}: not a plain file name in the record folder")
        target = Path(record).parent / name
        check_inside(target, root, "header file")
        if multi and depth < 2 and Path(f"{target}.hea").is_file():
            check_inside(Path(f"{target}.hea"), root, "segment header")
            check_header_names(target, root, depth=depth + 1)


def read_fast(record: Path, header: _Header) -> Signal:
    """Read the .dat of a parsed MIMIC header with numpy (exactly wfdb's digital-to-physical conversion)."""
    dat = Path(record).parent / header.file_name
    expected = header.n_sig * header.n_samples * 2
    try:
        raw = np.fromfile(dat, dtype="<i2", count=header.n_sig * header.n_samples)
    except FileNotFoundError:
        raise RecordError("file_missing", f"{dat.name} not found") from None
    except OSError as exc:  # a folder, no permission, an I/O error: bad data, not a bug
        raise RecordError("read_error", f"{dat.name}: {type(exc).__name__}: {exc}"[:200]) from None
    if raw.size * 2 < expected:
        raise RecordError("truncated", f"{dat.name} has {raw.size * 2} of {expected} bytes")
    digital = raw.reshape(header.n_samples, header.n_sig)
    nanlocs = digital == INVALID_16
    p_signal = digital.astype("float64")
    # the checksums from the float64 copy made anyway: one BLAS product, exact (integer partial sums < 2**53)
    sums = (np.ones(header.n_samples) @ p_signal).astype(np.int64) % 65536 if VERIFY_CHECKSUMS else None
    np.subtract(p_signal, np.asarray(header.baselines), p_signal)
    np.divide(p_signal, np.asarray(header.gains, dtype=np.float64), p_signal)
    p_signal[nanlocs] = np.nan
    checksums = (np.asarray(header.checksums, dtype=np.int64), sums) if sums is not None else None
    return Signal(p_signal, header.names, header.fs, header.units, "fast", checksums)


def read_wfdb(record: Path, multi_segment: bool = False) -> Signal:
    """The reference path: ``wfdb.rdrecord`` (any WFDB format), errors mapped to reason codes.

    A single-segment record is read as digital samples (kept for the checksums), then converted with
    wfdb's own ``dac``: the very steps of ``rdrecord(physical=True)``, so the signal is the same bits. A
    multi-segment or multi-frequency record is read physical, without checksums."""
    import wfdb

    checksums = None
    try:
        rec = None
        if not multi_segment:
            rec = wfdb.rdrecord(str(record), physical=False)
            if isinstance(rec, wfdb.Record) and rec.d_signal is not None and rec.n_sig > 0 \
                    and all(int(n) == 1 for n in (rec.samps_per_frame or [1])):
                checksums = (_header_checksums(rec.checksum or [None] * rec.n_sig),
                             sample_checksums(rec.d_signal))
                rec.dac(expanded=False, return_res=64, inplace=True)
                rec.convert_dtype(True, 64, True)
            else:
                rec = None
        if rec is None:
            rec = wfdb.rdrecord(str(record), physical=True)
    except FileNotFoundError as exc:
        raise RecordError("file_missing", str(exc)) from None
    except Exception as exc:  # wfdb raises many types for bad headers and data
        raise RecordError(_classify_wfdb_error(record, exc), f"{type(exc).__name__}: {exc}"[:200]) from None
    if rec.p_signal is None:
        raise RecordError("unsupported_record", "multi-frequency or multi-segment record without a plain signal")
    return Signal(rec.p_signal, list(rec.sig_name), float(rec.fs), list(rec.units), "wfdb", checksums)


def _classify_wfdb_error(record: Path, exc: Exception) -> str:
    if not Path(f"{record}.hea").is_file():
        return "file_missing"
    text = str(exc).lower()
    if isinstance(exc, ValueError) and ("reshape" in text or "buffer" in text or "size" in text):
        return "truncated"
    if isinstance(exc, (ValueError, TypeError, KeyError, IndexError, AttributeError)):
        return "header_corrupt"
    return "read_error"


def read_record(record: Path, fast: bool = True, root: Path | None = None) -> Signal:
    """Read a record by path without extension: the fast reader when it applies, wfdb otherwise.

    File names are untrusted: the header (and every file it names) must resolve inside ``root`` (default:
    the record's folder), checked before anything but the header is opened (``unsafe_path`` otherwise).
    """
    root = Path(root) if root is not None else Path(record).parent
    _real_folder.cache_clear()  # never a stale answer for a folder replaced by a symlink since
    check_inside(Path(f"{record}.hea"), root, "record")
    raw = _header_bytes(record)
    check_header_names(record, root, raw)
    text = read_header_text(record, raw)
    if fast:
        header = _parse_header(text) if text is not None else None
        if header is not None:
            return read_fast(record, header)
    multi = header_file_names(text if text is not None else raw.decode("latin-1"))[0]
    return read_wfdb(record, multi_segment=multi)
