"""Withdrawn labs (issue 20): a retraction, a haemolysis flag or an implausible correction of a lab that an earlier
export (or the previous version) holds withdraws it: it pairs with nothing, counted by reason. A version equals the
build of all its exports in order; a child inherits its parent's config; exports that yield nothing are refused."""

from __future__ import annotations

import pandas as pd
import pytest
from test_build_helpers import lab_frame, small_dataset

from ecgka.catalog import DatasetDir
from ecgka.config import apply_overrides
from ecgka.data.build import build_dataset
from ecgka.data.config import BuildConfig
from ecgka.data.dataset_versions import read_pairs
from ecgka.data.lineage import version_summary
from ecgka.data.manifest import format_summary
from ecgka.errors import InputError
from ecgka.io import read_json
from ecgka.keys import Col

PARENT = ["pairing.window_before_min=15", "pairing.window_after_min=15", "split.per_bin_cap=3"]
A, B, C, D = 10000003, 10000004, 10000005, 10000006  # the first ECG of each: cases a, b, c and a valid correction


def _cfg(extra=()) -> BuildConfig:
    return BuildConfig.model_validate(apply_overrides({}, [*PARENT, *extra]))


def _first_lab(labs: pd.DataFrame, subject: int) -> pd.Series:
    return labs[labs["subject_id"] == subject].iloc[0]


@pytest.fixture(scope="module")
def versions(tmp_path_factory):
    root = tmp_path_factory.mktemp("withdrawals")
    ecg, e1 = small_dataset(root, n_subjects=40, per_subject=2, seed=5)
    labs = pd.read_csv(e1)
    first = {s: labs.index[labs["subject_id"] == s][0] for s in (A, B, C, D)}
    for s, v in ((A, 4.3), (B, 4.5), (C, 5.6), (D, 3.8)):
        labs.loc[first[s], "valuenum"] = v
    gas = _first_lab(labs, A).copy()  # a blood gas 2 min after case a's lab: the ECG pairs with it once a is gone
    gas["itemid"], gas["valuenum"] = 50822, 4.0
    gas["charttime"] = str(pd.Timestamp(gas["charttime"]) + pd.Timedelta(minutes=2))
    labs = pd.concat([labs, gas.to_frame().T], ignore_index=True)
    labs.to_csv(e1, index=False)
    corr = lambda s, **kw: {"subject_id": s, "itemid": 50971, "charttime": _first_lab(labs, s)["charttime"], **kw}  # noqa: E731
    rows = [corr(A, valuenum=45.0),  # (a) an implausible correction
            corr(B, valuenum=5.9, comments="HEMOLYZED SPECIMEN, RESULT MAY BE FALSELY ELEVATED"),  # (b)
            corr(C, valuenum="", value="___", comments="ERROR: PREVIOUSLY REPORTED AS 5.6"),  # (c) a retraction
            corr(D, valuenum=6.1)]  # a valid correction
    e2 = root / "export2.csv"
    lab_frame(rows).to_csv(e2, index=False)
    m1 = build_dataset(ecg, [e1], root / "v1", _cfg(), workers=1)
    lines: list[str] = []
    m2 = build_dataset(ecg, [e2], root / "v2", None, workers=1, previous=root / "v1", log=lines.append)
    fresh = build_dataset(ecg, [e1, e2], root / "fresh", _cfg(), workers=1)
    return {"root": root, "ecg": ecg, "e1": e1, "e2": e2, "m1": m1, "m2": m2, "fresh": fresh, "lines": lines,
            "labs": labs}


def _study(labs: pd.DataFrame, subject: int) -> int:
    return 40000000 + (subject - 10000000) * 100  # small_dataset's first study of the subject


def _label(pairs: pd.DataFrame, study: int):
    row = pairs[pairs[Col.STUDY_ID.value] == study]
    return None if row.empty else (int(row[Col.ITEMID.value].iat[0]), round(float(row[Col.POTASSIUM.value].iat[0]), 2))


def test_v1_pairs_the_old_values(versions):
    p1 = read_pairs(DatasetDir(versions["root"] / "v1"))
    got = {s: _label(p1, _study(versions["labs"], s)) for s in (A, B, C, D)}
    assert got == {A: (50971, 4.3), B: (50971, 4.5), C: (50971, 5.6), D: (50971, 3.8)}


def test_withdrawn_labs_pair_with_nothing(versions):
    """Before: v2 kept 4.3, 4.5 and 5.6 (the invalid corrections were dropped and the old value stayed)."""
    p2 = read_pairs(DatasetDir(versions["root"] / "v2"))
    assert _label(p2, _study(versions["labs"], A)) == (50822, 4.0)  # the other valid lab in the window
    assert _label(p2, _study(versions["labs"], B)) is None and _label(p2, _study(versions["labs"], C)) is None
    assert _label(p2, _study(versions["labs"], D)) == (50971, 6.1)
    ledger = DatasetDir(versions["root"] / "v2").read_exclusions().set_index("study_id")
    for s in (B, C):  # accounted for: in the ledger
        assert ledger.loc[_study(versions["labs"], s), "reason"] == "no_lab_in_window"
    m2 = versions["m2"]
    want = {"withdrawn_retracted": 1, "withdrawn_hemolysed": 1, "withdrawn_invalid_correction": 1}
    assert {k: m2["lab_changes"][k] for k in want} == want and m2["lab_changes"]["changed"] == 1
    assert {k: m2["labs"][k] for k in want} == want
    assert m2["labs_dropped"]["retracted"] == 1 and m2["labs_dropped"]["hemolysed"] == 1
    text = version_summary(m2) + "\n" + format_summary(m2)
    assert "1 withdrawn_retracted" in text and "withdrawn_hemolysed (labs)" in text
    assert m2["counts"]["record_list"] == sum(m2["counts"][s] for s in ("train", "val", "test")) + m2["counts"]["excluded"]


def test_a_version_equals_the_build_of_all_its_exports(versions):
    """Before: the fresh build of both exports kept the lowest value per charttime (3.8, not the corrected 6.1)
    and the haemolysed and retracted values."""
    p2 = read_pairs(DatasetDir(versions["root"] / "v2")).set_index(Col.STUDY_ID.value)
    pf = read_pairs(DatasetDir(versions["root"] / "fresh")).set_index(Col.STUDY_ID.value)
    both = p2.index.intersection(pf.index)
    assert len(both) > 20
    cols = [Col.LAB_TIME.value, Col.ITEMID.value, Col.POTASSIUM.value]
    assert (p2.loc[both, cols] == pf.loc[both, cols]).all().all()
    assert _label(pf.reset_index(), _study(versions["labs"], D)) == (50971, 6.1)
    # the paired ECGs are the same, only splits may differ; labs.arrow the same rows
    ld2 = DatasetDir(versions["root"] / "v2").read_exclusions()
    ldf = DatasetDir(versions["root"] / "fresh").read_exclusions()
    no2 = set(ld2.loc[ld2["reason"] == "no_lab_in_window", "study_id"])
    assert no2 == set(ldf.loc[ldf["reason"] == "no_lab_in_window", "study_id"])
    fm = versions["fresh"]
    assert fm["lab_changes"]["withdrawn_retracted"] == 1 and fm["lab_changes"]["changed"] == 1


def test_lab_sums_add_up(versions):
    """potassium rows = kept + dropped + repeated + replaced + withdrawn rows, per build."""
    for m in (versions["m1"], versions["fresh"]):
        c = m["lab_changes"]
        assert m["labs"]["potassium_rows"] == (m["labs"]["kept"] + sum(m["labs_dropped"].values()) + c["repeated"]
                                               + c["old_rows_replaced"] + c["withdrawn_rows"])


def test_child_inherits_the_parent_config(versions, tmp_path):
    """Before: a child of a +-15 min, per_bin_cap=3 parent silently used 60 min and 60."""
    m2 = versions["m2"]
    assert m2["config"]["pairing"]["window_before_min"] == 15 and m2["config"]["split"]["per_bin_cap"] == 3
    assert m2["config_changes"] == {} and not any(line.startswith("config:") for line in versions["lines"])
    lines: list[str] = []
    cfg = BuildConfig.model_validate(apply_overrides({}, ["split.per_bin_cap=2"]))
    m = build_dataset(versions["ecg"], [versions["e2"]], tmp_path / "v3", cfg, workers=1,
                      previous=versions["root"] / "v1", log=lines.append)
    assert m["config"]["pairing"]["window_after_min"] == 15 and m["config"]["split"]["per_bin_cap"] == 2
    assert m["config_changes"] == {"split.per_bin_cap": {"parent": 3, "child": 2}}
    assert any("split.per_bin_cap=2" in line and "has 3" in line for line in lines)
    age = BuildConfig.model_validate(apply_overrides({}, ["label=age", "labs.lo=1.5", "labs.hi=10"]))
    with pytest.raises(InputError) as err:
        build_dataset(versions["ecg"], [versions["e2"]], tmp_path / "v4", age, workers=1,
                      previous=versions["root"] / "v1")
    assert "\n" not in str(err.value) and "label age on a potassium parent" in str(err.value)


def test_manifest_file_has_the_build_block(versions):
    on_disk = read_json(DatasetDir(versions["root"] / "v2").manifest_path)
    assert on_disk["build"]["read"] == versions["m2"]["build"]["read"]
    assert on_disk["build"]["reused"] == versions["m2"]["build"]["reused"] > 0


def test_signal_change_reuses_nothing(versions, tmp_path):
    """Before: "every ECG is read again", then "reused 34" (the unread exclusions)."""
    m = build_dataset(versions["ecg"], [versions["e2"]], tmp_path / "v5", _cfg(["signal.flat_std_mv=0.02"]),
                      workers=1, previous=versions["root"] / "v1")
    assert m["build"]["reused"] == 0 and m["build"]["read"] > 0


@pytest.mark.parametrize("kind", ["day_first", "header_only"])
def test_export_that_yields_nothing_is_refused(versions, tmp_path, kind):
    """Before: a new version, exit 0, "0 rows added"."""
    path = tmp_path / f"{kind}.csv"
    if kind == "day_first":
        lab_frame([{"subject_id": A, "itemid": 50971, "charttime": "31/01/2150 08:10:00", "valuenum": 4.0}] * 3
                  ).to_csv(path, index=False)
        match = r"day_first.csv: no usable potassium row: 3 of 3 potassium rows dropped bad_charttime"
    else:
        path.write_text(",".join(lab_frame([]).columns) + "\n")
        match = r"header_only.csv: no rows \(header only\)"
    with pytest.raises(InputError, match=match):
        build_dataset(versions["ecg"], [path], tmp_path / "v6", None, workers=1, previous=versions["root"] / "v1")
    assert not DatasetDir(tmp_path / "v6").manifest_path.exists()


def test_record_list_time_zone_offsets_are_excluded():
    """Before: converted to UTC with a raw UserWarning, or a "Mixed timezones" traceback."""
    from ecgka.data.record_list import validate_records

    df = pd.DataFrame({"subject_id": ["1", "2", "3"], "study_id": ["10", "20", "30"],
                       "ecg_time": ["2150-01-01 08:00:00", "2150-01-01 20:18:00-05:00", "2150-01-01T08:00:00Z"],
                       "path": ["files/a", "files/b", "files/c"]})
    out = validate_records(df)
    assert out["reason"].tolist() == ["", "bad_ecg_time", "bad_ecg_time"]
    assert "time zone offset" in out["detail"].iat[1]
