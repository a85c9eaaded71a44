"""Streamed potassium extraction from labevents-format exports (``.csv``, ``.csv.gz``, Parquet).

The files are never loaded whole: CSV is read in blocks with pyarrow's streaming reader, Parquet by
record batches. Rows are filtered on ``itemid`` in Arrow first (potassium is ~4 % of labevents), so only
the potassium rows are parsed further and kept, as compact numpy columns (:class:`LabTable`). Every
potassium row that is dropped is counted under a reason code.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ecgka.data.config import SIMPLE_FIELDS, LabsConfig
from ecgka.errors import InputError
from ecgka.progress import progress_bar

REQUIRED_COLUMNS = ("subject_id", "itemid", "charttime", "valuenum")
OPTIONAL_COLUMNS = ("comments",)
LAB_DROP_REASONS = (
    "malformed_row", "not_blood", "bad_subject_id", "bad_charttime", "timezone_offset", "retracted",
    "non_numeric_value", "out_of_range", "hemolysed", "duplicate",
)
# a row dropped for one of these reasons names a lab (subject, charttime, item) and withdraws it: any value of that
# lab, from an earlier export or the same one, pairs with nothing (counted per lab under the withdrawal reason)
WITHDRAWALS = {"retracted": "withdrawn_retracted", "hemolysed": "withdrawn_hemolysed",
               "out_of_range": "withdrawn_invalid_correction"}
LAB_KEY = ("subject_id", "time_s", "itemid")  # the identity of a lab across exports
_ID = re.compile(r"^\s*\+?(\d+)(?:\.0*)?\s*$")  # an integer id; "50971.0" is 50971, "x.0" and "1.5" are not
# a time with a UTC offset or "Z" (MIMIC times are naive, on a shifted timeline: such rows are dropped)
TZ_OFFSET = r"\d:\d{2}(?::\d{2}(?:\.\d*)?)?\s*(?:[zZ]|[+-]\d{2}(?::?\d{2})?)\s*$"
LAB_FIELDS = ("subject_id", "time_s", "itemid", "value")
UNCHECKED = "hemolysis_unchecked"  # potassium rows of files without `comments`: the haemolysis rule was not applied


@dataclass
class LabTable:
    """Potassium results as compact columns: times are seconds since 1970 (MIMIC's shifted timeline)."""

    subject_id: np.ndarray  # int64
    time_s: np.ndarray  # int64
    itemid: np.ndarray  # int32
    value: np.ndarray  # float32, mmol/L

    def __len__(self) -> int:
        return len(self.subject_id)

    @classmethod
    def empty(cls) -> LabTable:
        return cls(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int32), np.empty(0, np.float32))

    @classmethod
    def concat(cls, parts: list[LabTable]) -> LabTable:
        if not parts:
            return cls.empty()
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("subject_id", "time_s", "itemid", "value")))

    def sorted(self) -> LabTable:
        """Sort by subject, time, item, value (a deterministic order for pairing)."""
        order = np.lexsort((self.value, self.itemid, self.time_s, self.subject_id))
        return LabTable(self.subject_id[order], self.time_s[order], self.itemid[order], self.value[order])

    def to_arrow(self) -> pa.Table:
        return pa.table({f: getattr(self, f) for f in LAB_FIELDS})

    @classmethod
    def from_arrow(cls, table: pa.Table) -> LabTable:
        dtypes = (np.int64, np.int64, np.int32, np.float32)
        return cls(*(table.column(f).to_numpy().astype(t) for f, t in zip(LAB_FIELDS, dtypes, strict=True)))

    def save(self, path: Path) -> None:
        """Write the table as one Arrow IPC file (the work folder's cache and a version's ``labs.arrow``)."""
        from ecgka.data.shards import write_ipc

        write_ipc(self.to_arrow(), path)

    @classmethod
    def load(cls, path: Path) -> LabTable:
        """A table written by :meth:`save`."""
        from ecgka.data.shards import read_ipc

        return cls.from_arrow(read_ipc(path))


@dataclass(frozen=True)
class ItemSelection:
    """Item ids to keep (primary, secondary) and those of potassium in other fluids (counted, dropped)."""

    primary: tuple[int, ...]
    secondary: tuple[int, ...]
    other_fluid: tuple[int, ...] = ()

    @property
    def wanted(self) -> tuple[int, ...]:
        return self.primary + self.secondary + self.other_fluid


def select_items(cfg: LabsConfig, d_labitems: Path | None = None) -> ItemSelection:
    """The configured items, plus potassium items found by label and fluid in ``d_labitems`` if given.

    A found blood item is primary when its ``category`` is one of ``cfg.primary_categories`` (serum/plasma
    chemistry, e.g. the newer 52xxx codes), secondary otherwise (blood gas, any other category).
    """
    primary, secondary, other = list(cfg.primary_itemids), list(cfg.secondary_itemids), []
    if d_labitems is not None:
        items = read_small_table(d_labitems, ("itemid", "label", "fluid"))
        label_ok = items["label"].fillna("").str.strip().str.contains(cfg.label_pattern, flags=re.I, regex=True)
        blood = items["fluid"].fillna("").str.strip().str.lower().isin([f.lower() for f in cfg.blood_fluids])
        is_primary = _primary_category(d_labitems, items, cfg)
        ids = pd.to_numeric(items["itemid"], errors="coerce")
        known = set(primary) | set(secondary)
        for itemid, is_blood, prim in zip(ids[label_ok], blood[label_ok], is_primary[label_ok], strict=True):
            if pd.isna(itemid) or int(itemid) in known:
                continue
            (other if not is_blood else primary if prim else secondary).append(int(itemid))
    primary = list(dict.fromkeys(primary))
    return ItemSelection(tuple(primary), tuple(sorted(set(secondary) - set(primary))), tuple(sorted(set(other))))


def _primary_category(path: Path, items: pd.DataFrame, cfg: LabsConfig) -> pd.Series:
    """Whether each d_labitems row's category is a primary one; a missing column is an error unless the
    category rule is switched off (both category lists empty: every found item is secondary)."""
    if not cfg.primary_categories and not cfg.secondary_categories:
        return pd.Series(False, index=items.index)
    if "category" not in items.columns:
        raise InputError(f"{path}: missing column category (needed to rank potassium items by "
                         "labs.primary_categories; set labs.primary_categories=[] labs.secondary_categories=[] "
                         "to add every found item as secondary)")
    wanted = {c.strip().lower() for c in cfg.primary_categories}
    return items["category"].fillna("").str.strip().str.lower().isin(wanted)


def check_input_file(path: Path) -> None:
    """A one-line InputError unless ``path`` is a regular file with content: not found, a folder, empty
    (``/dev/null``, a zero-byte file) or not a regular file."""
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not a file")
    if not path.is_file():
        raise InputError(f"{path}: is empty (a device, not a file of lab rows)" if path.is_char_device()
                         else f"{path}: not a regular file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: is empty (0 bytes)")


def read_small_table(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    """Read a small table (d_labitems) as strings, checking its columns."""
    path = Path(path)
    check_input_file(path)
    df = pd.read_parquet(path) if _is_parquet(path) else pd.read_csv(path, dtype=str, keep_default_na=False)
    check_columns(path, list(df.columns), required)
    return df.astype(str)


def check_columns(path: Path, columns: list[str], required: tuple[str, ...]) -> None:
    missing = [c for c in required if c not in columns]
    if missing:
        raise InputError(f"{path}: missing required column(s) {', '.join(missing)}")


def simple_mapping(cfg: LabsConfig) -> dict[str, str]:
    """ecgka field -> the simple table's column name (defaults: the field names)."""
    return {f: f for f in SIMPLE_FIELDS} | dict(cfg.simple_columns)


def lab_format(path: Path, present: list[str], cfg: LabsConfig) -> str:
    """``labevents`` or ``simple`` for a file with columns ``present`` (``labs.format``, ``auto`` detects);
    wrong columns: one line naming the file, the missing columns and the columns found."""
    simple = simple_mapping(cfg)
    needs = {"labevents": list(REQUIRED_COLUMNS), "simple": [simple[f] for f in SIMPLE_FIELDS[:3]]}
    order = ["labevents", "simple"] if cfg.format == "auto" else [cfg.format]
    for fmt in order:
        if all(c in present for c in needs[fmt]):
            return fmt
    missing = "; ".join(f"{fmt} format needs {', '.join(c for c in needs[fmt] if c not in present)}" for fmt in order)
    raise InputError(f"{path}: missing required column(s) ({missing}); found: {', '.join(present) or 'no columns'}")


def _read_columns(fmt: str, present: list[str], cfg: LabsConfig) -> list[str]:
    if fmt == "labevents":
        return list(REQUIRED_COLUMNS) + [c for c in OPTIONAL_COLUMNS if c in present]
    simple = simple_mapping(cfg)
    return [simple[f] for f in SIMPLE_FIELDS if simple[f] in present]


def _as_labevents(batch: pa.RecordBatch, fmt: str, cfg: LabsConfig) -> pa.RecordBatch:
    """A simple-table batch with labevents names (``potassium`` -> ``valuenum``; no itemid: the first primary)."""
    if fmt == "labevents":
        return batch
    simple = simple_mapping(cfg)
    names = {simple["subject_id"]: "subject_id", simple["charttime"]: "charttime", simple["potassium"]: "valuenum",
             simple["itemid"]: "itemid"}
    batch = batch.rename_columns([names[c] for c in batch.schema.names])
    if "itemid" not in batch.schema.names:
        item = pa.array(np.full(batch.num_rows, cfg.primary_itemids[0], np.int64))
        batch = pa.RecordBatch.from_arrays([*batch.columns, item], names=[*batch.schema.names, "itemid"])
    return batch


def _is_parquet(path: Path) -> bool:
    return path.suffix.lower() in {".parquet", ".pq"}


def lab_file_columns(path: Path) -> list[str]:
    """Column names of a lab file, read from its header line / schema only."""
    import csv
    import gzip
    import zlib

    path = Path(path)
    check_input_file(path)
    try:
        if _is_parquet(path):
            return list(pq.read_schema(path).names)
        opener = gzip.open if path.suffix.lower() == ".gz" else open
        with opener(path, "rt", encoding="utf-8", newline="") as fh:
            return [c.strip() for c in next(csv.reader(fh), [])]
    except (pa.ArrowInvalid, OSError, EOFError, UnicodeDecodeError, csv.Error, zlib.error) as exc:
        raise InputError(f"{path}: cannot read as a lab table ({str(exc).splitlines()[0]})") from None


def iter_batches(path: Path, cfg: LabsConfig, columns: list[str], bad_rows: Counter,
                 malformed_is_potassium: Any = None) -> Iterator[pa.RecordBatch]:
    """Stream ``columns`` of a lab file as Arrow record batches (CSV values as strings). A row with the wrong
    field count is counted as ``malformed_row`` when ``malformed_is_potassium(text)`` says it is a potassium row
    (default: every malformed row)."""
    if _is_parquet(path):
        yield from pq.ParquetFile(path).iter_batches(batch_size=cfg.parquet_batch_rows, columns=columns)
        return

    def on_invalid(row: pacsv.InvalidRow) -> str:
        if malformed_is_potassium is None or malformed_is_potassium(row.text or ""):
            bad_rows["malformed_row"] += 1
        return "skip"

    reader = pacsv.open_csv(
        path,
        read_options=pacsv.ReadOptions(block_size=cfg.csv_block_bytes, use_threads=cfg.csv_threads),
        parse_options=pacsv.ParseOptions(newlines_in_values=cfg.newlines_in_values, invalid_row_handler=on_invalid),
        convert_options=pacsv.ConvertOptions(
            include_columns=columns, column_types={c: pa.string() for c in columns}, strings_can_be_null=True
        ),
    )
    yield from reader


def _malformed_matcher(present: list[str], fmt: str, cfg: LabsConfig, items: ItemSelection) -> Any:
    """Whether a malformed CSV line is a potassium row: its field at the item column (by the header's position) is
    a wanted item; a simple table without an item column holds potassium only."""
    import csv

    name = "itemid" if fmt == "labevents" else simple_mapping(cfg)["itemid"]
    if name not in present:
        return None
    pos, wanted = present.index(name), {str(i) for i in items.wanted}

    def is_potassium(text: str) -> bool:
        fields = next(csv.reader([text]), [])
        m = _ID.match(fields[pos]) if pos < len(fields) else None
        return bool(m) and str(int(m.group(1))) in wanted

    return is_potassium


def _item_filter(column: pa.Array, wanted: tuple[int, ...]) -> pa.Array:
    """Rows of ``wanted`` items; a text id follows the id rule (``50971.0`` is 50971)."""
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        text = pc.replace_substring_regex(pc.utf8_trim_whitespace(column), r"^\+?0*(\d+?)(?:\.0*)?$", r"\1")
        return pc.is_in(text, value_set=pa.array([str(i) for i in wanted]))
    if pa.types.is_floating(column.type):
        return pc.is_in(column, value_set=pa.array([float(i) for i in wanted], type=column.type))
    return pc.is_in(column, value_set=pa.array(wanted, type=column.type))


def _to_numeric(values: pd.Series) -> pd.Series:
    return pd.to_numeric(values, errors="coerce")


def parse_ids(values: pd.Series) -> pd.Series:
    """The one rule for every id column (subject_id, itemid): a positive integer, written as digits, optionally with
    a zero fraction (``"50971.0"`` is 50971); anything else (``"x.0"``, ``"1.5"``, ``"1e3"``, empty) is NaN."""
    if pd.api.types.is_integer_dtype(values):
        return values.astype("float64").where(values > 0)
    if pd.api.types.is_float_dtype(values):
        return values.where((values > 0) & (values == np.floor(values)))
    nums = pd.to_numeric(values.astype(str).str.extract(_ID, expand=False), errors="coerce")
    return nums.where(nums > 0)


def has_offset(values: pd.Series) -> np.ndarray:
    """Times that carry a UTC offset (``...-05:00``, ``...Z``, or a time-zone-aware column)."""
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return np.ones(len(values), dtype=bool)
    if pd.api.types.is_datetime64_any_dtype(values):
        return np.zeros(len(values), dtype=bool)
    return values.astype(str).str.contains(TZ_OFFSET, regex=True).to_numpy(dtype=bool)


def _to_seconds(values: pd.Series, skip: np.ndarray | None = None) -> np.ndarray:
    """Naive times as int64 seconds; unparseable (or ``skip``) -> INT64_MIN."""
    out = np.full(len(values), np.iinfo(np.int64).min, dtype=np.int64)
    todo = np.ones(len(values), dtype=bool) if skip is None else ~skip
    if not todo.any():
        return out
    sub = values[todo]
    if pd.api.types.is_datetime64_any_dtype(sub) and not isinstance(sub.dtype, pd.DatetimeTZDtype):
        times = sub
    else:
        times = pd.to_datetime(sub.astype(str).str.strip(), errors="coerce", format="ISO8601")
    ok = times.notna().to_numpy()
    idx = np.flatnonzero(todo)[ok]
    out[idx] = times[ok].to_numpy().astype("datetime64[s]").astype(np.int64)
    return out


class _HemolysisMatcher:
    """True for a comment with a mention of haemolysis that is not negated.

    Negated mentions ("no evidence of hemolysis", "non-hemolyzed", "hemolysis: none") are removed first;
    any mention left drops the row, so a comment with both ("not hemolyzed on recollection; first sample
    hemolyzed") is dropped: the result may come from the haemolysed sample.
    """

    def __init__(self, cfg: LabsConfig):
        self.hit = re.compile(cfg.hemolysis_pattern, re.I)
        self.negated = re.compile(cfg.hemolysis_negation_pattern, re.I)
        self.retracted = re.compile(cfg.retraction_pattern, re.I)

    def __call__(self, comments: pd.Series) -> np.ndarray:
        text = comments.fillna("").astype(str)
        hit = text.str.contains(self.hit, regex=True).to_numpy(dtype=bool, copy=True)
        if hit.any():
            left = text[hit].str.replace(self.negated, " ", regex=True)
            hit[hit] = left.str.contains(self.hit, regex=True).to_numpy(dtype=bool)
        return hit

    def retraction(self, comments: pd.Series) -> np.ndarray:
        return comments.fillna("").astype(str).str.contains(self.retracted, regex=True).to_numpy(dtype=bool)


def _parse_batch(batch: pa.RecordBatch, items: ItemSelection, cfg: LabsConfig, hemolysed: _HemolysisMatcher,
                 dropped: Counter) -> tuple[LabTable, pd.DataFrame]:
    """Filter one batch to usable potassium rows, counting each drop under its reason; also return the labs the
    batch withdraws (``LAB_KEY`` + ``reason``: a retraction, a haemolysis flag or an implausible value)."""
    batch = batch.filter(_item_filter(batch.column("itemid"), items.wanted))
    if batch.num_rows == 0:
        return LabTable.empty(), _no_withdrawals()
    df = batch.to_pandas()
    itemid = parse_ids(df["itemid"]).fillna(-1).astype(np.int64)
    subject = parse_ids(df["subject_id"])
    offset = has_offset(df["charttime"])
    time_s = _to_seconds(df["charttime"], offset)
    value = _to_numeric(df["valuenum"]).astype(np.float64).to_numpy()
    comments = df["comments"] if "comments" in df else None
    retracted = (hemolysed.retraction(comments) if comments is not None and cfg.retraction_pattern
                 else np.zeros(len(df), dtype=bool))
    reasons = np.full(len(df), "", dtype=object)
    checks = [
        ("not_blood", np.isin(itemid.to_numpy(), items.other_fluid)),
        ("bad_subject_id", subject.isna().to_numpy()),
        ("timezone_offset", offset),
        ("bad_charttime", time_s == np.iinfo(np.int64).min),
        ("retracted", retracted & ~np.isfinite(value)),
        ("non_numeric_value", ~np.isfinite(value)),
        ("out_of_range", ~((value >= cfg.lo) & (value <= cfg.hi))),
    ]
    if cfg.drop_hemolysed and comments is not None:
        checks.append(("hemolysed", hemolysed(comments)))
    elif cfg.drop_hemolysed:  # the rule cannot be applied: counted, reported in the summary and manifest
        dropped[UNCHECKED] += int((~np.isin(itemid.to_numpy(), items.other_fluid)).sum())
    for reason, bad in checks:
        newly = bad & (reasons == "")
        reasons[newly] = reason
    for reason, n in Counter(reasons[reasons != ""]).items():
        dropped[reason] += int(n)
    keep = reasons == ""
    sid = subject.fillna(0).to_numpy().astype(np.int64)
    w = np.isin(reasons, list(WITHDRAWALS))
    withdrawals = pd.DataFrame({"subject_id": sid[w], "time_s": time_s[w], "itemid": itemid.to_numpy()[w].astype(np.int32),
                                "reason": reasons[w].astype(str)})
    return LabTable(sid[keep], time_s[keep], itemid.to_numpy()[keep].astype(np.int32),
                    value[keep].astype(np.float32)), withdrawals


def _no_withdrawals() -> pd.DataFrame:
    return pd.DataFrame({"subject_id": pd.Series(dtype=np.int64), "time_s": pd.Series(dtype=np.int64),
                         "itemid": pd.Series(dtype=np.int32), "reason": pd.Series(dtype=str)})


@dataclass
class LabExtract:
    """The merged potassium rows of some exports and what happened to every row."""

    table: LabTable
    dropped: dict[str, int]  # potassium rows dropped, per reason (LAB_DROP_REASONS)
    seen: dict[str, Any]  # rows, potassium_rows, kept (+ hemolysis_unchecked, hemolysis_unchecked_files)
    changes: dict[str, int]  # the merge (merge_labs): added, repeated, changed, old_rows_replaced, withdrawn_*


def _read_export(path: Path, cfg: LabsConfig, items: ItemSelection, hemolysed: _HemolysisMatcher, progress: bool
                 ) -> tuple[LabTable, pd.DataFrame, Counter, Counter]:
    """One export: its usable rows (sorted, de-duplicated), the labs it withdraws, drop counts and row counts."""
    dropped: Counter = Counter()
    seen: Counter = Counter()
    parts, withdrawals = [], []
    present = lab_file_columns(path)
    fmt = lab_format(path, present, cfg)
    columns = _read_columns(fmt, present, cfg)
    bar = progress_bar(progress=progress, lines=True, unit=" rows", unit_scale=True, desc=f"labs {Path(path).name}", leave=False)
    try:
        for batch in iter_batches(Path(path), cfg, columns, dropped, _malformed_matcher(present, fmt, cfg, items)):
            seen["rows"] += batch.num_rows
            table, withdrawn = _parse_batch(_as_labevents(batch, fmt, cfg), items, cfg, hemolysed, dropped)
            parts.append(table)
            if len(withdrawn):
                withdrawals.append(withdrawn)
            bar.update(batch.num_rows)
    except (pa.ArrowInvalid, OSError, EOFError) as exc:
        raise InputError(f"{path}: unreadable lab file ({(str(exc).splitlines() or [type(exc).__name__])[0]})") from None
    finally:
        bar.close()
    table = LabTable.concat(parts).sorted()
    unchecked = dropped.pop(UNCHECKED, 0)
    if unchecked:
        seen[UNCHECKED] = int(unchecked)
    if "comments" not in columns and cfg.drop_hemolysed:
        seen["no_comments"] = 1
    if cfg.drop_duplicates and len(table):
        table = _drop_duplicates(table, dropped)
    seen["potassium_rows"] = len(table) + sum(dropped.values())
    return table, (pd.concat(withdrawals, ignore_index=True) if withdrawals else _no_withdrawals()), dropped, seen


def _refuse_empty(path: Path, table: LabTable, withdrawn: pd.DataFrame, dropped: Counter, seen: Counter) -> None:
    """An export that yields no lab (no usable row, nothing it could withdraw) is an error, not a new version."""
    if len(table) or len(withdrawn):
        return
    name = Path(path).name
    if not seen["rows"]:
        raise InputError(f"{name}: no rows (header only); nothing was built")
    drops = {k: v for k, v in dropped.items() if v}
    if not drops:
        raise InputError(f"{name}: no potassium row among {seen['rows']:,} rows; nothing was built")
    reason, n = max(drops.items(), key=lambda kv: kv[1])
    raise InputError(f"{name}: no usable potassium row: {n:,} of {seen['potassium_rows']:,} potassium rows dropped "
                     f"{reason}; nothing was built")


def extract_labs(paths: list[Path], cfg: LabsConfig, items: ItemSelection, base: LabTable | None = None,
                 progress: bool = False) -> LabExtract:
    """Stream every export, in the order given, and merge each into the rows before it (``base``: a previous
    version's rows): :func:`merge_labs`, so a later export's value of a lab replaces an earlier one and a
    retraction, haemolysis flag or implausible correction withdraws the lab. An export with no usable row is
    refused (one line naming the main drop reason).

    Files without a ``comments`` column cannot be checked for haemolysis: the row counts then say how many
    potassium rows went unchecked (``hemolysis_unchecked``) and in which files.
    """
    dropped: Counter = Counter()
    seen: Counter = Counter()
    changes: Counter = Counter()
    hemolysed = _HemolysisMatcher(cfg)
    no_comments: list[str] = []
    table = base if base is not None else LabTable.empty()
    for path in paths:
        part, withdrawn, d, s = _read_export(Path(path), cfg, items, hemolysed, progress)
        _refuse_empty(Path(path), part, withdrawn, d, s)
        if s.pop("no_comments", 0):
            no_comments.append(Path(path).name)
        dropped.update(d)
        seen.update(s)
        table, c = merge_labs(table, part, withdrawn)
        changes.update(c)
    if no_comments and seen.get(UNCHECKED):
        seen[f"{UNCHECKED}_files"] = no_comments
    seen["kept"] = len(table)
    out_changes = {k: int(changes.get(k, 0)) for k in CHANGE_KEYS}
    return LabExtract(table, {r: int(dropped.get(r, 0)) for r in LAB_DROP_REASONS}, dict(seen), out_changes)


def extract_potassium(paths: list[Path], cfg: LabsConfig, items: ItemSelection, progress: bool = False
                      ) -> tuple[LabTable, dict[str, int], dict[str, Any]]:
    """:func:`extract_labs` from nothing: the potassium table (sorted, de-duplicated), drop counts, row counts."""
    out = extract_labs(paths, cfg, items, progress=progress)
    return out.table, out.dropped, out.seen


def _drop_duplicates(table: LabTable, dropped: Counter) -> LabTable:
    """Remove repeated (subject, time, item, value) rows of a sorted table."""
    same = np.ones(len(table), dtype=bool)
    same[0] = False
    for col in (table.subject_id, table.time_s, table.itemid, table.value):
        same[1:] &= col[1:] == col[:-1]
    dropped["duplicate"] += int(same.sum())
    keep = ~same
    return LabTable(table.subject_id[keep], table.time_s[keep], table.itemid[keep], table.value[keep])


CHANGE_KEYS = ("added", "repeated", "changed", "old_rows_replaced", *WITHDRAWALS.values(), "withdrawn_rows")


def _frame(table: LabTable) -> pd.DataFrame:
    return pd.DataFrame({"subject_id": table.subject_id, "time_s": table.time_s, "itemid": table.itemid,
                         "value": table.value})


def _rows(t: LabTable, mask: np.ndarray) -> LabTable:
    return LabTable(t.subject_id[mask], t.time_s[mask], t.itemid[mask], t.value[mask])


def _in(frame: pd.DataFrame, keys: pd.DataFrame, on: list[str]) -> np.ndarray:
    if frame.empty or keys.empty:
        return np.zeros(len(frame), dtype=bool)
    return frame[on].merge(keys[on].drop_duplicates(), on=on, how="left", indicator=True)["_merge"].eq("both").to_numpy()


def merge_labs(old: LabTable, new: LabTable, withdrawn: pd.DataFrame | None = None) -> tuple[LabTable, dict[str, int]]:
    """``old`` with the labs of a later export ``new`` (both de-duplicated). A lab is (subject, charttime, item).

    - a lab in ``withdrawn`` (the export retracted it, flagged it haemolysed, or corrected it to an implausible
      value) is removed, old and new rows alike; counted per lab that had a value, by reason
      (``withdrawn_retracted``, ``withdrawn_hemolysed``, ``withdrawn_invalid_correction``; ``withdrawn_rows``);
    - a lab whose rows in ``new`` are all in ``old`` is unchanged (the rows are ``repeated``: counted once);
    - one with another value takes exactly ``new``'s rows (``changed``; the old rows are ``old_rows_replaced``);
    - a lab not in ``old`` is ``added`` (rows).
    """
    o, n = _frame(old), _frame(new)
    keys = list(LAB_KEY)
    counts = dict.fromkeys(CHANGE_KEYS, 0)
    if withdrawn is not None and len(withdrawn):
        rank = {r: i for i, r in enumerate(WITHDRAWALS)}  # a retraction first, then haemolysis, then the range
        w = withdrawn.assign(rank=withdrawn["reason"].map(rank)).sort_values([*keys, "rank"], kind="stable")
        w = w.drop_duplicates(keys)[[*keys, "reason"]]
        o_w, n_w = _in(o, w, keys), _in(n, w, keys)
        had = pd.concat([o.loc[o_w, keys], n.loc[n_w, keys]]).drop_duplicates()
        hit = w.merge(had, on=keys, how="inner")
        for reason, k in hit["reason"].value_counts().items():
            counts[WITHDRAWALS[reason]] = int(k)
        counts["withdrawn_rows"] = int(o_w.sum() + n_w.sum())
        old, new = _rows(old, ~o_w), _rows(new, ~n_w)
        o, n = _frame(old), _frame(new)
    in_old = _in(n, o, keys)
    same = _in(n, o, [*keys, "value"])
    n = n.assign(in_old=in_old, same=same)
    per_key = n[n["in_old"]].groupby(keys)["same"].all()
    changed = per_key[~per_key].reset_index()[keys]
    o_changed, n_changed = _in(o, changed, keys), _in(n, changed, keys)
    take = ~in_old | n_changed
    merged = LabTable.concat([_rows(old, ~o_changed), _rows(new, take)]).sorted()
    counts |= {"added": int((~in_old).sum()), "repeated": int((in_old & ~n_changed).sum()), "changed": len(changed),
               "old_rows_replaced": int(o_changed.sum())}
    return merged, counts
