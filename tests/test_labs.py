"""Streamed potassium extraction: filters, drop reasons, formats, bounded blocks, column checks."""

from __future__ import annotations

import gzip
import shutil

import numpy as np
import pytest
from test_build_helpers import lab_frame, write_labs

from ecgka.data.config import LabsConfig
from ecgka.data.labs import ItemSelection, extract_potassium, lab_file_columns, select_items
from ecgka.errors import InputError

ITEMS = ItemSelection(primary=(50971,), secondary=(50822,))
T = "2150-01-01 08:00:00"

ROWS = [
    {"subject_id": 1, "itemid": 50971, "charttime": T, "valuenum": 4.1},  # kept
    {"subject_id": 1, "itemid": 50822, "charttime": "2150-01-01 09:00:00", "valuenum": 3.9},  # kept (secondary)
    {"subject_id": 1, "itemid": 50912, "charttime": T, "valuenum": 1.0},  # creatinine: not potassium
    {"subject_id": 2, "itemid": 50971, "charttime": T, "valuenum": "", "value": "___"},  # non_numeric_value
    {"subject_id": 2, "itemid": 50971, "charttime": "not a time", "valuenum": 4.0},  # bad_charttime
    {"subject_id": "x", "itemid": 50971, "charttime": T, "valuenum": 4.0},  # bad_subject_id
    {"subject_id": 3, "itemid": 50971, "charttime": T, "valuenum": 0.9},  # out_of_range
    {"subject_id": 3, "itemid": 50971, "charttime": T, "valuenum": 10.01},  # out_of_range
    {"subject_id": 3, "itemid": 50971, "charttime": "2150-01-02 08:00:00", "valuenum": 10.0},  # kept: bound
    {"subject_id": 4, "itemid": 50971, "charttime": T, "valuenum": 6.2,
     "comments": "HEMOLYSIS FALSELY ELEVATES K"},  # hemolysed
    {"subject_id": 4, "itemid": 50971, "charttime": "2150-01-03 08:00:00", "valuenum": 5.0,
     "comments": "Slightly hemolyzed specimen"},  # hemolysed
    {"subject_id": 4, "itemid": 50971, "charttime": "2150-01-04 08:00:00", "valuenum": 4.4,
     "comments": "Specimen not hemolyzed"},  # kept
    {"subject_id": 5, "itemid": 50971, "charttime": T, "valuenum": 3.3},  # kept
    {"subject_id": 5, "itemid": 50971, "charttime": T, "valuenum": 3.3},  # duplicate
]
EXPECTED_DROPS = {"non_numeric_value": 1, "bad_charttime": 1, "bad_subject_id": 1, "out_of_range": 2,
                  "hemolysed": 2, "duplicate": 1}



@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".parquet"])
def test_extract_drop_reasons_all_formats(tmp_path, suffix):
    plain = write_labs(tmp_path / "labs.csv", ROWS)
    if suffix == ".csv.gz":
        path = tmp_path / "labs.csv.gz"
        with open(plain, "rb") as src, gzip.open(path, "wb") as dst:
            shutil.copyfileobj(src, dst)
    elif suffix == ".parquet":
        path = write_labs(tmp_path / "labs.parquet", ROWS)
    else:
        path = plain
    table, dropped, seen = extract_potassium([path], LabsConfig(), ITEMS)
    assert {k: v for k, v in dropped.items() if v} == EXPECTED_DROPS
    assert seen["rows"] == len(ROWS)
    assert seen["potassium_rows"] == len(ROWS) - 1  # all but creatinine
    kept = sorted(zip(table.subject_id.tolist(), table.itemid.tolist(), np.round(table.value.astype(float), 3).tolist(), strict=True))
    assert kept == [(1, 50822, 3.9), (1, 50971, 4.1), (3, 50971, 10.0), (4, 50971, 4.4), (5, 50971, 3.3)]
    assert seen["kept"] == 5
    # times are seconds on the shifted timeline
    t0 = np.datetime64("2150-01-01T08:00:00", "s").astype(np.int64)
    assert t0 in table.time_s.tolist()


def test_small_blocks_give_same_result(tmp_path):
    rows = ROWS * 200  # duplicates galore, spans many 64 kB blocks
    path = write_labs(tmp_path / "labs.csv", rows)
    big, d_big, _ = extract_potassium([path], LabsConfig(), ITEMS)
    small, d_small, _ = extract_potassium([path], LabsConfig(csv_block_bytes=1 << 16), ITEMS)
    assert d_big == d_small
    for f in ("subject_id", "time_s", "itemid", "value"):
        np.testing.assert_array_equal(getattr(big, f), getattr(small, f))
    # 200 copies of the 6 valid rows (5 distinct) collapse to 5
    assert len(big) == 5 and d_big["duplicate"] == 200 * 6 - 5


def test_malformed_rows_counted(tmp_path):
    """Only malformed potassium rows count (their item field, by the header's position, is a potassium item):
    before, every malformed row of any analyte was counted and the potassium sums no longer added up."""
    path = write_labs(tmp_path / "labs.csv", ROWS[:2])
    with open(path, "a") as fh:
        fh.write("1,2,3\n")  # too few fields, no item
        fh.write("9,1,,,50912,,2150-01-01 08:00:00,,1.0,1.0,mg/dL,,,,,,extra\n")  # creatinine, one field too many
        fh.write("9,1,,,50971,,2150-01-01 10:00:00,,4.0,4.0,mEq/L,,,,,,extra\n")  # potassium, one field too many
    table, dropped, seen = extract_potassium([path], LabsConfig(), ITEMS)
    assert dropped["malformed_row"] == 1 and len(table) == 2
    assert seen["potassium_rows"] == seen["kept"] + sum(dropped.values())


def test_potassium_sums_add_up(tmp_path):
    """rows of potassium items = kept + every drop reason (malformed rows included), in one export and two."""
    a = write_labs(tmp_path / "a.csv", ROWS)
    with open(a, "a") as fh:
        fh.write("9,1,,,50971,,2150-01-05 10:00:00,,4.0,4.0,mEq/L,,,,,,extra\n")
        fh.write("9,1,,,50983,,2150-01-05 10:00:00,,140,140,mEq/L,,,,,,extra\n")  # sodium: not counted
    _, dropped, seen = extract_potassium([a], LabsConfig(), ITEMS)
    assert seen["potassium_rows"] == len(ROWS) - 1 + 1 == seen["kept"] + sum(dropped.values())


@pytest.mark.parametrize("itemid, subject, kept", [
    ("50971.0", "1", True), (" 50971 ", "1.0", True), ("50971.00", "+1", True),
    ("50971", "x.0", False), ("50971", "1.5", False), ("50971", "1e3", False), ("50971", "-1", False),
])
def test_one_numeric_id_rule(tmp_path, itemid, subject, kept):
    """Every id column follows one rule: an integer, "50971.0" is 50971; "x.0", "1.5", "1e3" are refused
    (before: itemid "50971.0" was not potassium while subject_id "1.5" was accepted)."""
    rows = [{"subject_id": subject, "itemid": itemid, "charttime": T, "valuenum": 4.1}]
    for path in (write_labs(tmp_path / "l.csv", rows), write_labs(tmp_path / "l.parquet", rows)):
        table, dropped, _ = extract_potassium([path], LabsConfig(), ITEMS) if kept else (None, None, None)
        if kept:
            assert table.itemid.tolist() == [50971] and table.subject_id.tolist() == [1]
        else:
            rows2 = rows + [{"subject_id": 2, "itemid": 50971, "charttime": T, "valuenum": 4.0}]
            table, dropped, _ = extract_potassium([write_labs(path, rows2)], LabsConfig(), ITEMS)
            assert table.subject_id.tolist() == [2] and dropped["bad_subject_id"] == 1


def test_time_zone_offsets_are_dropped(tmp_path):
    """MIMIC times are naive (shifted): a charttime with a UTC offset is dropped as timezone_offset, whether all
    rows or only some carry one (before: converted to UTC, or a pandas "Mixed timezones" traceback)."""
    rows = [{"subject_id": 1, "itemid": 50971, "charttime": "2150-01-01 20:18:00-05:00", "valuenum": 4.1},
            {"subject_id": 1, "itemid": 50971, "charttime": "2150-01-01T21:00:00Z", "valuenum": 4.2},
            {"subject_id": 1, "itemid": 50971, "charttime": "2150-01-01 22:00:00+0100", "valuenum": 4.3},
            {"subject_id": 1, "itemid": 50971, "charttime": "2150-01-01 23:00:00", "valuenum": 4.4}]
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table, dropped, seen = extract_potassium([write_labs(tmp_path / "l.csv", rows)], LabsConfig(), ITEMS)
    assert dropped["timezone_offset"] == 3 and np.allclose(table.value, [4.4])
    assert table.time_s.tolist() == [np.datetime64("2150-01-01T23:00:00", "s").astype(np.int64)]
    import pandas as pd

    aware = lab_frame(rows[:1])
    aware["charttime"] = pd.to_datetime(aware["charttime"])  # a time-zone-aware Parquet column
    aware.to_parquet(tmp_path / "aware.parquet")
    with pytest.raises(InputError, match=r"aware.parquet: no usable potassium row: 1 of 1 potassium rows dropped "
                                         r"timezone_offset"):
        extract_potassium([tmp_path / "aware.parquet"], LabsConfig(), ITEMS)


def test_export_with_no_usable_row_is_refused(tmp_path):
    """An export that yields nothing is one line naming the main drop reason (before: a new version, '0 rows added')."""
    day_first = [{"subject_id": 1, "itemid": 50971, "charttime": "31/01/2150 08:00:00", "valuenum": 4.1}] * 2
    with pytest.raises(InputError, match=r"^d.csv: no usable potassium row: 2 of 2 potassium rows dropped bad_charttime"):
        extract_potassium([write_labs(tmp_path / "d.csv", day_first)], LabsConfig(), ITEMS)
    header = tmp_path / "h.csv"
    header.write_text(",".join(lab_frame(ROWS[:1]).columns) + "\n")
    with pytest.raises(InputError, match=r"^h.csv: no rows \(header only\)"):
        extract_potassium([header], LabsConfig(), ITEMS)
    other = [{"subject_id": 1, "itemid": 50912, "charttime": T, "valuenum": 1.0}]
    with pytest.raises(InputError, match=r"^o.csv: no potassium row among 1 rows"):
        extract_potassium([write_labs(tmp_path / "o.csv", other)], LabsConfig(), ITEMS)


def test_retraction_pattern_is_a_validated_regex():
    with pytest.raises(ValueError, match="regular expression"):
        LabsConfig(retraction_pattern="(unclosed")
    assert LabsConfig(retraction_pattern="").retraction_pattern == ""


def test_missing_columns_one_line_error(tmp_path):
    df = lab_frame(ROWS).drop(columns=["valuenum", "charttime"])
    path = tmp_path / "labs.csv"
    df.to_csv(path, index=False)
    with pytest.raises(InputError) as err:
        extract_potassium([path], LabsConfig(), ITEMS)
    msg = str(err.value)
    assert "labs.csv" in msg and "charttime" in msg and "valuenum" in msg and "\n" not in msg
    assert "itemid" in lab_file_columns(path)


def test_d_labitems_adds_items_and_not_blood(tmp_path):
    d = tmp_path / "d_labitems.csv"
    d.write_text("itemid,label,fluid,category\n50971,Potassium,Blood,Chemistry\n50822,\"Potassium, Whole Blood\","
                 "Blood,Blood Gas\n52610,Potassium,Blood,Chemistry\n51097,\"Potassium, Urine\",Urine,Chemistry\n"
                 "51500,Potassium Chloride Dose,Blood,Drug\n"
                 "50912,Creatinine,Blood,Chemistry\n")
    items = select_items(LabsConfig(), d)
    assert items.primary == (50971, 52610) and items.secondary == (50822,) and items.other_fluid == (51097,)
    rows = [{"subject_id": 1, "itemid": 52610, "charttime": T, "valuenum": 4.0},
            {"subject_id": 1, "itemid": 51097, "charttime": T, "valuenum": 40.0}]
    table, dropped, _ = extract_potassium([write_labs(tmp_path / "l.csv", rows)], LabsConfig(), items)
    assert table.itemid.tolist() == [52610] and dropped["not_blood"] == 1


def test_typed_parquet_input(tmp_path):
    """A Parquet export with native types (ints, timestamps, float NaN) gives the same result as CSV."""
    import pandas as pd

    df = lab_frame(ROWS[:3] + ROWS[6:9] + ROWS[12:])
    df["subject_id"] = df["subject_id"].astype("int64")
    df["itemid"] = df["itemid"].astype("int32")
    df["charttime"] = pd.to_datetime(df["charttime"])
    df["valuenum"] = pd.to_numeric(df["valuenum"], errors="coerce")
    path = tmp_path / "typed.parquet"
    df.to_parquet(path)
    csv = write_labs(tmp_path / "same.csv", ROWS[:3] + ROWS[6:9] + ROWS[12:])
    a, da, _ = extract_potassium([path], LabsConfig(), ITEMS)
    b, db, _ = extract_potassium([csv], LabsConfig(), ITEMS)
    assert da == db and len(a) == 4
    for f in ("subject_id", "time_s", "itemid", "value"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))


def test_corrupt_gzip_is_one_line_error(tmp_path):
    path = write_labs(tmp_path / "labs.csv", ROWS)
    gz = tmp_path / "labs.csv.gz"
    with open(path, "rb") as src, gzip.open(gz, "wb") as dst:
        shutil.copyfileobj(src, dst)
    data = gz.read_bytes()
    gz.write_bytes(data[:40] + b"\x00" * 50 + data[90:])
    with pytest.raises(InputError) as err:
        extract_potassium([gz], LabsConfig(), ITEMS)
    assert "labs.csv.gz" in str(err.value) and "\n" not in str(err.value)


D_LABITEMS = ("itemid,label,fluid,category\n50971,Potassium,Blood,Chemistry\n50822,\"Potassium, Whole Blood\","
              "Blood,Blood Gas\n52610,Potassium,Blood,Chemistry\n52452,\"Potassium, Whole Blood\",Blood,Blood Gas\n"
              "51097,\"Potassium, Urine\",Urine,Chemistry\n")


def test_d_labitems_ranks_found_items_by_category(tmp_path):
    """52xxx chemistry codes are primary (serum/plasma), blood-gas codes secondary; the rule is configurable."""
    d = tmp_path / "d_labitems.csv"
    d.write_text(D_LABITEMS)
    items = select_items(LabsConfig(), d)
    assert items.primary == (50971, 52610) and items.secondary == (50822, 52452)
    flipped = select_items(LabsConfig(primary_categories=["Blood Gas"], secondary_categories=["Chemistry"]), d)
    assert flipped.primary == (50971, 52452) and flipped.secondary == (50822, 52610)
    assert select_items(LabsConfig(primary_categories=[" CHEMISTRY"]), d) == items  # case and spaces ignored
    d.write_text(D_LABITEMS + "52999,Potassium,Blood,Hematology\n")
    assert 52999 in select_items(LabsConfig(), d).secondary  # a blood item of any other category: secondary


def test_d_labitems_without_category_is_a_clear_error_unless_the_rule_is_off(tmp_path):
    d = tmp_path / "d_labitems.csv"
    d.write_text("itemid,label,fluid\n52610,Potassium,Blood\n")
    with pytest.raises(InputError, match=r"d_labitems.csv: missing column category .*primary_categories"):
        select_items(LabsConfig(), d)
    items = select_items(LabsConfig(primary_categories=[], secondary_categories=[]), d)
    assert items.primary == (50971,) and items.secondary == (50822, 52610)


def test_category_in_both_lists_is_a_config_error():
    with pytest.raises(ValueError, match="both"):
        LabsConfig(primary_categories=["Chemistry"], secondary_categories=["chemistry"])


def test_lab_file_without_comments_reports_unchecked_rows(tmp_path):
    rows = [{"subject_id": 1, "itemid": 50971, "charttime": T, "valuenum": 4.1, "comments": "hemolyzed"},
            {"subject_id": 1, "itemid": 50822, "charttime": "2150-01-01 09:00:00", "valuenum": 3.9},
            {"subject_id": 1, "itemid": 50912, "charttime": T, "valuenum": 1.0}]  # not potassium: not counted
    path = tmp_path / "labs.csv"
    lab_frame(rows).drop(columns="comments").to_csv(path, index=False)
    table, dropped, seen = extract_potassium([path], LabsConfig(), ITEMS)
    assert len(table) == 2 and dropped["hemolysed"] == 0
    assert seen["hemolysis_unchecked"] == 2 and seen["hemolysis_unchecked_files"] == ["labs.csv"]
    _, _, seen = extract_potassium([write_labs(tmp_path / "with.csv", rows)], LabsConfig(), ITEMS)
    assert "hemolysis_unchecked" not in seen  # a comments column (even mostly empty): the rule applies
    _, _, seen = extract_potassium([path], LabsConfig(drop_hemolysed=False), ITEMS)
    assert "hemolysis_unchecked" not in seen  # switched off on purpose: nothing to report


DROPPED_PHRASES = [
    "hemolyzed", "Slightly hemolyzed", "grossly hemolysed specimen", "hemolysis present", "moderate hemolysis",
    "HEMOLYZED SPECIMEN, RESULT MAY BE FALSELY ELEVATED", "HEMOLYSIS FALSELY ELEVATES K",
    "Moderately hemolyzed specimen.  HEMOLYSIS FALSELY ELEVATES K", "Haemolysed sample",
    "not hemolyzed on recollection; first sample hemolyzed",  # both: any affirmative mention drops
    "No comment. Hemolyzed", "Note: hemolyzed",
]
KEPT_PHRASES = [
    "no evidence of hemolysis", "not hemolyzed", "non-hemolyzed", "non hemolysed", "hemolysis: none",
    "no hemolysis", "hemolysis absent", "specimen not haemolysed", "Specimen not hemolyzed", "NO VISIBLE HEMOLYSIS",
    "hemolysis not detected", "without hemolysis", "negative for hemolysis", "", "VERIFIED BY REPEAT ANALYSIS",
]


@pytest.mark.parametrize("comment, dropped", [(c, True) for c in DROPPED_PHRASES] + [(c, False) for c in KEPT_PHRASES])
def test_hemolysis_phrases(tmp_path, comment, dropped):
    rows = [{"subject_id": 1, "itemid": 50971, "charttime": T, "valuenum": 4.1, "comments": comment}]
    table, drops, _ = extract_potassium([write_labs(tmp_path / "l.csv", rows)], LabsConfig(), ITEMS)
    assert (drops["hemolysed"], len(table)) == ((1, 0) if dropped else (0, 1))


def test_shipped_build_config_states_the_defaults():
    """configs/data/ecg_ka_dir.yaml lists every build rule with its built-in default (the lab rules included)."""
    from pathlib import Path

    from ecgka.config import load_config
    from ecgka.data.config import BuildConfig

    path = Path(__file__).resolve().parents[1] / "configs" / "data" / "ecg_ka_dir.yaml"
    assert load_config(BuildConfig, str(path), []) == BuildConfig()
