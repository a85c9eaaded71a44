"""A fast reader for MIMIC-IV-ECG records, bit-identical to ``wfdb.rdrecord`` on what it accepts.

``wfdb.rdrecord`` spends ~5 ms per MIMIC record parsing the header; the samples read in ~0.02 ms. This
reader parses the simple header layout itself (single segment, one format-16 data file shared by all
signals, no skew, byte offset or multiple samples per frame, explicit non-zero gains) and reads the
``.dat`` with numpy, converting exactly as wfdb does (float64: (d - baseline) / gain; -32768 -> NaN).
Anything else goes to ``wfdb.rdrecord``. Failures are :class:`RecordError` with a reason code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_GAIN = re.compile(r"^([-+]?\d*\.?\d+(?:[eE][-+]?\d+)?)(?:\(([-+]?\d+)\))?(?:/(\S+))?$")
INVALID_16 = -32768


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
    files, gains, baselines, units, names = set(), [], [], [], []
    for line in lines[1:]:
        parts = line.split(maxsplit=8)
        if len(parts) != 9 or parts[1] != "16":
            return None
        match = _GAIN.match(parts[2])
        if match is None or float(match.group(1)) == 0 or match.group(3) is None or match.group(2) is None:
            return None
        files.add(parts[0])
        gains.append(float(match.group(1)))
        baselines.append(int(match.group(2)))
        units.append(match.group(3))
        names.append(parts[8])
    if len(files) != 1:
        return None
    return _Header(n_sig, fs, n_samples, files.pop(), gains, baselines, units, names)


def read_header_text(record: Path) -> str | None:
    """The header as text; None when it is not ASCII (then wfdb decides whether it is readable)."""
    hea = Path(f"{record}.hea")
    try:
        return hea.read_bytes().decode("ascii")
    except FileNotFoundError:
        raise RecordError("file_missing", f"{hea.name} not found") from None
    except UnicodeDecodeError:
        return None
    except OSError as exc:
        raise RecordError("header_corrupt", str(exc)) from None


def read_fast(record: Path, header: _Header) -> Signal:
    """Read the .dat of a parsed MIMIC header with numpy (exactly wfdb's digital-to-physical conversion)."""
    dat = Path(record).parent / header.file_name
    expected = header.n_sig * header.n_samples * 2
    try:
        raw = np.fromfile(dat, dtype="<i2", count=header.n_sig * header.n_samples)
    except FileNotFoundError:
        raise RecordError("file_missing", f"{dat.name} not found") from None
    if raw.size * 2 < expected:
        raise RecordError("truncated", f"{dat.name} has {raw.size * 2} of {expected} bytes")
    digital = raw.reshape(header.n_samples, header.n_sig)
    nanlocs = digital == INVALID_16
    p_signal = digital.astype("float64")
    np.subtract(p_signal, np.asarray(header.baselines), p_signal)
    np.divide(p_signal, np.asarray(header.gains, dtype=np.float64), p_signal)
    p_signal[nanlocs] = np.nan
    return Signal(p_signal, header.names, header.fs, header.units, "fast")


def read_wfdb(record: Path) -> Signal:
    """The reference path: ``wfdb.rdrecord`` (any WFDB format), errors mapped to reason codes."""
    import wfdb

    try:
        rec = wfdb.rdrecord(str(record), physical=True)
    except FileNotFoundError as exc:
        raise RecordError("file_missing", str(exc)) from None
    except Exception as exc:  # wfdb raises many types for bad headers and data
        raise RecordError(_classify_wfdb_error(record, exc), f"{type(exc).__name__}: {exc}"[:200]) from None
    if rec.p_signal is None:
        raise RecordError("unsupported_record", "multi-frequency or multi-segment record without a plain signal")
    return Signal(rec.p_signal, list(rec.sig_name), float(rec.fs), list(rec.units), "wfdb")


def _classify_wfdb_error(record: Path, exc: Exception) -> str:
    if not Path(f"{record}.hea").is_file():
        return "file_missing"
    text = str(exc).lower()
    if isinstance(exc, ValueError) and ("reshape" in text or "buffer" in text or "size" in text):
        return "truncated"
    if isinstance(exc, (ValueError, TypeError, KeyError, IndexError, AttributeError)):
        return "header_corrupt"
    return "read_error"


def read_record(record: Path, fast: bool = True) -> Signal:
    """Read a record by path without extension: the fast reader when it applies, wfdb otherwise."""
    if fast:
        text = read_header_text(record)
        header = _parse_header(text) if text is not None else None
        if header is not None:
            return read_fast(record, header)
    return read_wfdb(record)
