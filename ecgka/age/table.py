"""The DIR split CSV (``age,path,split``): one reader with one-line errors naming file, column and value."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ecgka.age.metadata import read_csv
from ecgka.errors import InputError
from ecgka.keys import SPLITS

COLUMNS = ("age", "path", "split")


def read_split_table(path: str | Path) -> pd.DataFrame:
    """Columns ``sample_id`` (the 0-based row of the CSV: stable across splits and packings), ``age``
    (float32), ``path``, ``split``. Missing columns, a non-numeric age or an unknown split is an InputError."""
    path = Path(path)
    table = read_csv(path)
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise InputError(f"{path}: missing columns {', '.join(missing)} (a DIR split CSV has age,path,split)")
    ages = pd.to_numeric(table["age"], errors="coerce")
    _first_bad(path, "age", table["age"], ages.isna() | ~np.isfinite(ages.fillna(0)), "is not a number")
    _first_bad(path, "split", table["split"], ~table["split"].isin(SPLITS), f"is not one of {', '.join(SPLITS)}")
    return pd.DataFrame({"sample_id": np.arange(len(table), dtype=np.int64), "age": ages.astype(np.float32),
                         "path": table["path"].astype(str), "split": table["split"]})


def _first_bad(path: Path, column: str, values: pd.Series, bad: pd.Series, why: str) -> None:
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputError(f"{path}: column {column}, row {row + 2}: {values.iloc[row]!r} {why}")
