"""Read and validate ``record_list.csv`` of a MIMIC-IV-ECG root.

Every row gets ``row`` (its 0-based position, used as the dataset's ``sample_id``) and either stays a
candidate or receives an exclusion reason: ``bad_row`` (ids not positive integers), ``bad_ecg_time`` (unparseable,
or carrying a UTC offset: MIMIC times are naive, on a shifted timeline),
``unsafe_path`` (absolute, ``..``, or otherwise escaping the root: rejected without opening anything)
and ``duplicate_record`` (a study or path already listed above).
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from ecgka.errors import InputError

RECORD_LIST = "record_list.csv"
REQUIRED_COLUMNS = ("subject_id", "study_id", "ecg_time", "path")


def is_safe_relative(path: str) -> bool:
    """True for a plain relative POSIX path inside the root (no ``..``, not absolute, no drive/backslash)."""
    if not isinstance(path, str) or not path.strip() or "\\" in path or "\x00" in path or ":" in path:
        return False
    pure = PurePosixPath(path.strip())
    return not pure.is_absolute() and all(part not in {"..", ""} for part in pure.parts) and path.strip() != "."


def resolve_record(root: Path, path: str) -> Path:
    """The record's path (without extension) under ``root``; callers check ``is_safe_relative`` first."""
    if not is_safe_relative(path):
        raise InputError(f"record path {path!r} escapes the ECG root")
    return Path(root) / PurePosixPath(path.strip())


def read_record_list(ecg_root: Path) -> pd.DataFrame:
    """Read ``ecg_root/record_list.csv``; columns are checked at once (one-line InputError)."""
    path = Path(ecg_root) / RECORD_LIST
    if not path.is_file():
        raise InputError(f"{path}: record list not found (is --ecg-root the MIMIC-IV-ECG root?)")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    except UnicodeDecodeError:
        raise InputError(f"{path}: {_first_bad_byte(path)}") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise InputError(f"{path}: not a readable CSV ({str(exc).splitlines()[0] if str(exc) else 'empty'})") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(f"{path}: missing required column(s) {', '.join(missing)}")
    return validate_records(df)


def _first_bad_byte(path: Path) -> str:
    """Where a file stops being UTF-8: ``line N, column C: byte 0xFF is not valid UTF-8``."""
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                return f"line {number}, column {exc.start + 1}: byte 0x{line[exc.start]:02x} is not valid UTF-8"
    return "not valid UTF-8"


def _positive_ints(values: pd.Series) -> pd.Series:
    nums = pd.to_numeric(values.str.strip(), errors="coerce")
    ok = nums.notna() & (nums > 0) & (nums == np.floor(nums.fillna(0)))
    return nums.where(ok)


def validate_records(df: pd.DataFrame) -> pd.DataFrame:
    """Typed columns + ``reason``/``detail`` ('' for candidates); one output row per input row."""
    out = pd.DataFrame({"row": np.arange(len(df), dtype=np.int64)})
    subject, study = _positive_ints(df["subject_id"]), _positive_ints(df["study_id"])
    from ecgka.data.labs import has_offset

    offset = has_offset(df["ecg_time"])  # MIMIC times are naive (shifted): a time with a UTC offset is excluded
    times = pd.to_datetime(df["ecg_time"].str.strip().where(~offset, ""), errors="coerce", format="ISO8601")
    out["subject_id"] = subject.fillna(0).astype(np.int64).to_numpy()
    out["study_id"] = study.fillna(0).astype(np.int64).to_numpy()
    out["path"] = df["path"].astype(str).to_numpy()
    ok_time = times.notna().to_numpy()
    out["time_s"] = np.zeros(len(df), np.int64)
    out.loc[ok_time, "time_s"] = times[ok_time].to_numpy().astype("datetime64[s]").astype(np.int64)
    reason = np.full(len(df), "", dtype=object)
    detail = np.full(len(df), "", dtype=object)
    bad_id = (subject.isna() | study.isna()).to_numpy()
    reason[bad_id], detail[bad_id] = "bad_row", "subject_id or study_id is not a positive integer"
    todo = reason == ""
    bad_time = todo & ~ok_time
    reason[bad_time] = "bad_ecg_time"
    detail[bad_time] = df["ecg_time"].to_numpy()[bad_time]
    tz = bad_time & offset
    detail[tz] = [f"time zone offset in {t!r} (MIMIC times are naive)" for t in df["ecg_time"].to_numpy()[tz]]
    todo = reason == ""
    unsafe = todo & ~np.array([is_safe_relative(p) for p in out["path"]], dtype=bool)
    reason[unsafe], detail[unsafe] = "unsafe_path", "path is absolute or leaves the ECG root"
    todo = reason == ""
    norm = out["path"].str.strip().str.rstrip("/")
    dup = todo & (_duplicated_where(norm, todo) | _duplicated_where(out["study_id"], todo))
    reason[dup], detail[dup] = "duplicate_record", "study or path listed earlier"
    out["reason"], out["detail"] = reason, detail
    return out


def _duplicated_where(values: pd.Series, mask: np.ndarray) -> np.ndarray:
    """Duplicated among the rows of ``mask`` (first occurrence kept)."""
    dup = np.zeros(len(values), dtype=bool)
    dup[mask] = values[mask].duplicated(keep="first").to_numpy()
    return dup
