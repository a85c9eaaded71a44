"""Lab export formats (`labs.format: auto|labevents|simple`): a full labevents file, an incremental one, a
simple table mapped by config; wrong columns are one line naming the file, the missing and found columns.
Also the lab merge rule of dataset versions (identity: subject, charttime, itemid)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ecgka.config import apply_overrides
from ecgka.data.config import BuildConfig, LabsConfig
from ecgka.data.dataset_versions import merge_labs
from ecgka.data.labs import LabTable, extract_potassium, lab_file_columns, lab_format, select_items
from ecgka.errors import InputError

ROWS = pd.DataFrame({
    "labevent_id": [1, 2, 3, 4, 5],
    "subject_id": [1, 1, 2, 2, 3],
    "itemid": [50971, 50822, 50971, 50912, 50971],
    "charttime": ["2150-01-01 08:00:00", "2150-01-01 09:00:00", "2150-01-02 08:00:00", "2150-01-02 08:00:00",
                  "2150-01-03 08:00:00"],
    "valuenum": [4.1, 3.9, 5.6, 1.0, 12.0],
    "comments": ["", "", "", "", ""],
})


def _labs(extra=()) -> LabsConfig:
    return BuildConfig.model_validate(apply_overrides({}, list(extra))).labs


def _extract(path, cfg: LabsConfig) -> LabTable:
    table, _, _ = extract_potassium([path], cfg, select_items(cfg))
    return table


def _same(a: LabTable, b: LabTable) -> None:
    for f in ("subject_id", "time_s", "itemid", "value"):
        assert np.array_equal(getattr(a, f), getattr(b, f)), f


def test_simple_table_equals_labevents(tmp_path):
    full = tmp_path / "labevents.csv"
    ROWS.to_csv(full, index=False)
    simple = tmp_path / "simple.csv"
    primary = ROWS[ROWS["itemid"] == 50971]
    primary.rename(columns={"valuenum": "potassium"})[["subject_id", "charttime", "potassium"]].to_csv(simple, index=False)
    cfg = _labs()
    assert lab_format(simple, lab_file_columns(simple), cfg) == "simple"
    assert lab_format(full, lab_file_columns(full), cfg) == "labevents"
    expected = _extract(full, cfg)
    expected = LabTable(*(getattr(expected, f)[expected.itemid == 50971] for f in ("subject_id", "time_s", "itemid", "value")))
    _same(_extract(simple, cfg), expected)  # no itemid: the rows count as the primary item
    with_item = tmp_path / "with_item.parquet"
    ROWS.rename(columns={"valuenum": "K", "subject_id": "patient", "charttime": "t", "itemid": "code"})[
        ["patient", "t", "K", "code"]].to_parquet(with_item)
    mapped = _labs(["labs.format=simple", "labs.simple_columns={subject_id: patient, charttime: t, potassium: K, "
                    "itemid: code}"])
    _same(_extract(with_item, mapped), _extract(full, cfg))  # itemid given: its rows keep their item


def test_incremental_export_is_a_labevents_file(tmp_path):
    new_rows = tmp_path / "incremental.csv.gz"
    ROWS.iloc[2:3].to_csv(new_rows, index=False)
    assert len(_extract(new_rows, _labs())) == 1


@pytest.mark.parametrize(("fmt", "columns", "needs"), [
    ("auto", ["subject_id", "charttime", "value"], "labevents format needs itemid, valuenum; simple format needs potassium"),
    ("labevents", ["subject_id", "charttime", "potassium"], "labevents format needs itemid, valuenum"),
    ("simple", ["subject_id", "itemid", "charttime", "valuenum"], "simple format needs potassium"),
])
def test_wrong_columns_one_line(tmp_path, fmt, columns, needs):
    path = tmp_path / "wrong.csv"
    pd.DataFrame({c: [1] for c in columns}).to_csv(path, index=False)
    with pytest.raises(InputError) as err:
        lab_format(path, lab_file_columns(path), _labs([f"labs.format={fmt}"]))
    line = str(err.value)
    assert "\n" not in line and str(path) in line and needs in line and f"found: {', '.join(columns)}" in line


def test_wrong_format_config():
    with pytest.raises(ValueError, match="format must be one of"):
        LabsConfig(format="xml")
    with pytest.raises(ValueError, match="unknown field"):
        LabsConfig(simple_columns={"value": "K"})


def test_cli_wrong_columns(tmp_path, capsys):
    from ecgka.cli import main
    from ecgka.standin import generate_standin

    generate_standin(tmp_path / "mimic", subjects=30, seed=1, workers=1)
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"subject": [1], "when": ["2150-01-01"], "k": [4.0]}).to_csv(bad, index=False)
    code = main(["build", "--ecg-root", str(tmp_path / "mimic" / "ecg"), "--labs", str(bad), "--out",
                 str(tmp_path / "ds"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "bad.csv" in err and "found: subject, when, k" in err


def _table(rows) -> LabTable:
    a = np.array(rows, dtype=np.float64).reshape(-1, 4)
    return LabTable(a[:, 0].astype(np.int64), a[:, 1].astype(np.int64), a[:, 2].astype(np.int32),
                    a[:, 3].astype(np.float32)).sorted()


def test_merge_labs_rule():
    old = _table([[1, 100, 50971, 4.0], [1, 200, 50971, 4.5], [1, 200, 50971, 4.9], [2, 100, 50971, 3.0]])
    new = _table([[1, 100, 50971, 4.0],   # repeated: counted once
                  [1, 200, 50971, 4.5],   # a subset of a lab's rows: unchanged (4.9 stays)
                  [2, 100, 50971, 3.3],   # corrected: replaces 3.0
                  [3, 100, 50971, 5.0]])  # added
    merged, counts = merge_labs(old, new)
    assert counts == {"added": 1, "repeated": 2, "changed": 1, "old_rows_replaced": 1, "withdrawn_retracted": 0,
                      "withdrawn_hemolysed": 0, "withdrawn_invalid_correction": 0, "withdrawn_rows": 0}
    got = sorted(zip(merged.subject_id.tolist(), merged.time_s.tolist(), np.round(merged.value.astype(np.float64), 2).tolist(), strict=True))
    assert got == [(1, 100, 4.0), (1, 200, 4.5), (1, 200, 4.9), (2, 100, 3.3), (3, 100, 5.0)]


def test_merge_labs_withdrawals():
    """A lab the new export retracts, flags haemolysed or corrects to an implausible value is removed (old rows
    and the export's own rows alike), counted once per lab that had a value, by reason (retraction first)."""
    old = _table([[1, 100, 50971, 4.3], [1, 200, 50971, 4.5], [1, 300, 50971, 5.6], [1, 400, 50971, 4.0]])
    new = _table([[1, 400, 50971, 4.1], [2, 100, 50971, 4.2]])
    withdrawn = pd.DataFrame({"subject_id": [1, 1, 1, 1, 1, 3], "time_s": [100, 200, 300, 300, 400, 100],
                              "itemid": [50971] * 6,
                              "reason": ["out_of_range", "hemolysed", "hemolysed", "retracted", "hemolysed", "hemolysed"]})
    merged, counts = merge_labs(old, new, withdrawn)
    assert list(zip(merged.subject_id.tolist(), merged.time_s.tolist(), strict=True)) == [(2, 100)]
    assert counts["withdrawn_invalid_correction"] == 1 and counts["withdrawn_retracted"] == 1
    assert counts["withdrawn_hemolysed"] == 2  # (1, 200) and (1, 400) with its new row; (3, 100) had no value
    assert counts["withdrawn_rows"] == 5 and counts["added"] == 1
