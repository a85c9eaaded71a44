"""Shards of ECG-Ka-DIR: the schema, a buffered Parquet part writer, Arrow IPC work parts and readers.

``signal`` is ``fixed_size_list<float16>[n_leads * n_samples]`` (lead-major): a reader gets one
contiguous float16 buffer per row group and reshapes it without copying (:func:`signal_array`).
Row groups hold a fixed number of rows, so the layout never depends on how work was chunked.
``ecg_time``/``lab_time`` hold whole seconds but are typed ``timestamp[ms]``: Parquet has no second unit,
so a ``timestamp[s]`` column would read back as ``[ms]`` anyway. Final shards carry the dataset's facts
as key-value metadata (``ecgka.data.manifest.shard_metadata``); work parts are Arrow IPC files without it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ecgka.catalog import DatasetDir
from ecgka.data.config import ShardConfig
from ecgka.io import atomic_path
from ecgka.keys import Col

SUBGROUP_FIELDS = [(Col.SEX.value, pa.string()), (Col.AGE.value, pa.int16()), (Col.CARE_SETTING.value, pa.string()),
                   (Col.EGFR_STAGE.value, pa.string())]


def shard_schema(signal_len: int, metadata: dict[str, str] | None = None, subgroups: bool = True) -> pa.Schema:
    """The final shards' schema; ``subgroups=False``: that of work parts (subgroup columns are added at assembly,
    before ``signal``)."""
    return pa.schema([
        (Col.SAMPLE_ID.value, pa.int64()), (Col.SUBJECT_ID.value, pa.int64()), (Col.STUDY_ID.value, pa.int64()),
        (Col.ECG_TIME.value, pa.timestamp("ms")), (Col.LAB_TIME.value, pa.timestamp("ms")),
        (Col.DELTA_MINUTES.value, pa.float32()), (Col.ITEMID.value, pa.int32()), (Col.POTASSIUM.value, pa.float32()),
        (Col.LEADS.value, pa.string()), (Col.FS.value, pa.int32()),
        *(SUBGROUP_FIELDS if subgroups else []),
        (Col.SIGNAL.value, pa.list_(pa.float16(), signal_len)),
    ], metadata=metadata)


def make_table(meta: dict[str, np.ndarray], signals: np.ndarray, leads: str, fs: int) -> pa.Table:
    """A shard table from metadata arrays (times as int64 seconds) and signals [rows, signal_len] float16."""
    n, signal_len = signals.shape
    flat = pa.array(np.ascontiguousarray(signals, dtype=np.float16).reshape(-1), type=pa.float16())
    arrays = [
        pa.array(meta["sample_id"], pa.int64()), pa.array(meta["subject_id"], pa.int64()),
        pa.array(meta["study_id"], pa.int64()),
        pa.array(np.asarray(meta["ecg_time_s"], np.int64) * 1000, pa.timestamp("ms")),
        pa.array(np.asarray(meta["lab_time_s"], np.int64) * 1000, pa.timestamp("ms")),
        pa.array(meta["delta_minutes"], pa.float32()), pa.array(meta["itemid"], pa.int32()),
        pa.array(meta["potassium"], pa.float32()), pa.array([leads] * n, pa.string()),
        pa.array(np.full(n, fs, np.int32), pa.int32()),
        pa.FixedSizeListArray.from_arrays(flat, signal_len),
    ]
    return pa.Table.from_arrays(arrays, schema=shard_schema(signal_len, subgroups=False))


def add_subgroups(table: pa.Table, subgroups: Any) -> pa.Table:
    """A work part with the subgroup columns (``ecgka.data.subgroups``) inserted before ``signal``, looked up by
    ``sample_id`` in ``subgroups`` (indexed by sample_id); missing: "unknown" / null."""
    import pandas as pd

    ids = table.column(Col.SAMPLE_ID.value).to_numpy()
    frame = (subgroups.reindex(ids) if subgroups is not None
             else pd.DataFrame(index=ids, columns=[n for n, _ in SUBGROUP_FIELDS]))
    pos = table.schema.get_field_index(Col.SIGNAL.value)
    for name, typ in SUBGROUP_FIELDS:
        values = frame[name]
        if typ == pa.string():
            arr = pa.array(values.fillna("unknown").astype(str).to_numpy(object), pa.string())
        else:
            num = pd.to_numeric(values, errors="coerce")
            arr = pa.array(num.to_numpy(np.float64), pa.float64(), from_pandas=True).cast(typ)
        table = table.add_column(pos, pa.field(name, typ), arr)
        pos += 1
    return table


def write_table(table: pa.Table, path: Path, cfg: ShardConfig) -> None:
    """Write one Parquet file atomically with fixed-size row groups."""
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, row_group_size=cfg.row_group_rows, compression=cfg.compression,
                       compression_level=cfg.compression_level, use_dictionary=[Col.LEADS.value],
                       write_statistics=[Col.SAMPLE_ID.value, Col.SUBJECT_ID.value, Col.POTASSIUM.value])


class SplitWriter:
    """Append tables in order; writes ``part-NNNNN.parquet`` files of ``part_rows`` rows into a folder, each
    carrying the key-value metadata of ``schema``."""

    def __init__(self, folder: Path, cfg: ShardConfig, schema: pa.Schema):
        self.folder, self.cfg, self.schema = Path(folder), cfg, schema
        self.pending: list[pa.Table] = []
        self.n_pending = 0
        self.parts = 0
        self.rows = 0
        self.folder.mkdir(parents=True, exist_ok=True)

    def append(self, table: pa.Table) -> None:
        if table.num_rows:
            self.pending.append(table.replace_schema_metadata(None))
            self.n_pending += table.num_rows
        while self.n_pending >= self.cfg.part_rows:
            self._flush(self.cfg.part_rows)

    def _flush(self, n: int) -> None:
        table = pa.concat_tables(self.pending).combine_chunks() if self.pending else self.schema.empty_table()
        part = table.slice(0, n).replace_schema_metadata(self.schema.metadata)
        write_table(part, self.folder / DatasetDir.shard_name(self.parts), self.cfg)
        rest = table.slice(n)
        self.pending, self.n_pending = ([rest] if rest.num_rows else []), rest.num_rows
        self.parts += 1
        self.rows += n

    def close(self) -> int:
        """Write the last part (an empty part for an empty split, so every split has a schema)."""
        if self.n_pending or self.parts == 0:
            self._flush(self.n_pending)
        return self.rows


def write_ipc(table: pa.Table, path: Path) -> None:
    """Write a work part as an Arrow IPC file (zstd; not Parquet, so it never joins the shard glob)."""
    options = pa.ipc.IpcWriteOptions(compression="zstd")
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema, options=options) as writer:
        writer.write_table(table)


def read_ipc(path: Path, columns: list[str] | None = None) -> pa.Table:
    """A work part written by :func:`write_ipc` (optionally only ``columns``)."""
    table = pa.ipc.open_file(pa.memory_map(str(path), "r")).read_all()
    return table.select(columns) if columns else table


def signal_array(table: pa.Table, n_leads: int) -> np.ndarray:
    """The signal column as float16 [rows, n_leads, n_samples] (zero-copy for a single-chunk column)."""
    col = table.column(Col.SIGNAL.value).combine_chunks()
    width = col.type.list_size
    values = col.values.to_numpy(zero_copy_only=True)[col.offset * width:(col.offset + len(col)) * width]
    return values.reshape(len(col), n_leads, width // n_leads)
