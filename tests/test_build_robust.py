"""Bad inputs never crash the build and never disappear: each ends in the exclusion ledger with its reason."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from test_build_helpers import ecg_digital, lab_frame, record_path, write_labs, write_record, write_root

from ecgka.catalog import DatasetDir, WorkDir
from ecgka.cli import main
from ecgka.data.assemble import EmptyBuildError
from ecgka.data.build import build_dataset
from ecgka.data.config import BuildConfig
from ecgka.data.shards import read_ipc
from ecgka.keys import SPLITS

T = pd.Timestamp("2150-03-01 10:00:00")


# two wide label bins: four or more subjects fill train, val and test (an empty split fails a build)
ONE_BIN = ["label.step=8.5"]


def _bad_root(tmp: Path) -> tuple[Path, Path, dict[int, str]]:
    """A root with good records and one record per failure; returns root, labs and study -> expected reason."""
    root = tmp / "ecg"
    rows, labs, expect = [], [], {}

    def add(study, reason, digital=None, subject=None, time=T, **kw):
        subject = subject or 10000000 + study
        rel = kw.pop("path", record_path(subject, study))
        if digital is not None:
            write_record(root, rel, digital, **kw)
        rows.append({"subject_id": subject, "study_id": study, "ecg_time": str(time), "path": rel})
        labs.append({"subject_id": subject, "itemid": 50971, "charttime": str(T + pd.Timedelta(minutes=5)),
                     "valuenum": 4.0 + (study % 30) / 10})
        expect[study] = reason

    for i in range(40):
        add(100 + i, "ok", ecg_digital(i))
    add(1, "file_missing")
    add(2, "truncated", ecg_digital(2))
    dat = root / f"{record_path(10000002, 2)}.dat"
    dat.write_bytes(dat.read_bytes()[:1000])
    add(3, "header_corrupt", ecg_digital(3))
    (root / f"{record_path(10000003, 3)}.hea").write_bytes(b"3 x 500\n\x00\xff junk\n")
    add(4, "wrong_lead_count", ecg_digital(4, n_sig=11))
    add(5, "lead_missing", ecg_digital(5), names=["I", "X", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4",
                                                  "V5", "V6"])
    d = ecg_digital(6)
    d[2000:2003, 1] = -32768
    add(6, "nan_samples", d)
    d = ecg_digital(7)
    d[:, 1] = 17
    add(7, "flat_lead", d)
    d = ecg_digital(8)
    d[:, 1] = np.clip(d[:, 1], -5, 5)  # clipped: many samples at the limits
    add(8, "saturated_lead", d)
    add(9, "wrong_fs", ecg_digital(9, n=2500), fs=250)
    add(10, "wrong_length", ecg_digital(10, n=4000))
    outside = write_record(tmp / "outside", "rec/11", ecg_digital(11))  # a valid record outside the root
    add(11, "unsafe_path", path="../outside/rec/11")
    add(12, "unsafe_path", path=str(outside))
    add(13, "no_lab_in_window", ecg_digital(13), time=T - pd.Timedelta(hours=5))
    add(14, "bad_ecg_time", ecg_digital(14), time="yesterday")
    # two leads named II: the second (really lead III) would be stored as "II"
    add(16, "duplicate_lead", ecg_digital(16), names=["I", "II", "II", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4",
                                                      "V5", "V6"])
    add(17, "checksum_mismatch", ecg_digital(17))  # format-16 data behind a header saying 212: read as garbage
    hea = root / f"{record_path(10000017, 17)}.hea"
    hea.write_text(hea.read_text().replace(" 16 200.0(0)/mV", " 212 200.0(0)/mV"))
    add(18, "checksum_mismatch", ecg_digital(18))  # one sample of lead II changed after the header was written
    dat = root / f"{record_path(10000018, 18)}.dat"
    raw = bytearray(dat.read_bytes())
    raw[2 * 12 * 100 + 2] ^= 0x01  # sample 100, lead II (interleaved little-endian int16)
    dat.write_bytes(bytes(raw))
    write_root(root, rows)
    with open(root / "record_list.csv", "a") as fh:  # duplicate of study 100, and a row with a bad id
        fh.write(f"10000100,100,100,{T},{record_path(10000100, 100)}\n")
        fh.write(f"abc,15,15,{T},files/p1/pabc/s15/15\n")
    lab_rows = lab_frame(labs).astype(str)
    lab_rows.loc[len(lab_rows)] = lab_rows.iloc[0].copy()
    lab_rows.loc[len(lab_rows) - 1, ["valuenum", "value"]] = ["", "___"]
    lab_rows.loc[len(lab_rows)] = lab_rows.iloc[0].copy()
    lab_rows.loc[len(lab_rows) - 1, "charttime"] = "31/31/2150"
    path = tmp / "labevents.csv"
    lab_rows.to_csv(path, index=False)
    return root, path, expect


@pytest.fixture(scope="module")
def bad_build(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad")
    root, labs, expect = _bad_root(tmp)
    # 0.5-wide label bins: several subjects per bin, so val and test get samples (an empty split fails a build)
    cfg = BuildConfig.model_validate({"split": {"per_bin_cap": 2}, "label": {"step": 0.5},
                                      "shards": {"chunk_records": 8}})
    manifest = build_dataset(root, [labs], tmp / "out", cfg)
    return tmp, root, labs, expect, manifest


def test_every_bad_record_has_its_reason(bad_build):
    tmp, root, _, expect, manifest = bad_build
    excl = DatasetDir(tmp / "out").read_exclusions()
    first = excl[~excl["reason"].isin(["duplicate_record", "bad_row"])]
    by_study = dict(zip(first["study_id"], first["reason"], strict=True))
    for study, reason in expect.items():
        if reason == "ok":
            assert by_study.get(study) in (None, "not_selected_for_split"), study
        elif reason == "bad_ecg_time":
            assert by_study[study] == "bad_ecg_time"
        else:
            assert by_study[study] == reason, (study, excl[excl["study_id"] == study].to_dict("records"))
    dup = excl[excl["reason"] == "duplicate_record"]
    assert dup["study_id"].tolist() == [100] and dup["row"].iat[0] == len(expect)  # the later copy
    assert excl.loc[excl["reason"] == "bad_row", "row"].tolist() == [len(expect) + 1]
    assert set(excl.columns) >= {"subject_id", "study_id", "path", "reason", "detail"}


def test_accounting_is_exact(bad_build):
    tmp, root, _, _, manifest = bad_build
    n_list = len(pd.read_csv(root / "record_list.csv"))
    ds = DatasetDir(tmp / "out")
    n_split = sum(pq.read_metadata(p).num_rows for s in SPLITS for p in ds.shards(s))
    n_excl = len(ds.read_exclusions())
    assert n_list == n_split + n_excl == manifest["counts"]["record_list"]
    assert sum(manifest["exclusions"].values()) == n_excl == manifest["counts"]["excluded"]
    assert manifest["labs_dropped"]["non_numeric_value"] == 1 and manifest["labs_dropped"]["bad_charttime"] == 1
    written = json.loads(ds.manifest_path.read_text())
    assert written["counts"] == manifest["counts"]


def test_unsafe_path_never_opened(bad_build, monkeypatch):
    tmp, root, labs, _, _ = bad_build
    import ecgka.data.signal_stage as stage

    opened = []
    real = stage.read_record
    monkeypatch.setattr(stage, "read_record",
                        lambda p, fast=True, root=None: opened.append(str(p)) or real(p, fast, root))
    build_dataset(root, [labs], tmp / "again", BuildConfig.model_validate({"shards": {"chunk_records": 8},
                                                                           "label": {"step": 0.5}}))
    assert opened and not any("outside" in p for p in opened)


@pytest.mark.parametrize("target", ["record_list", "labs"])
def test_missing_columns_exit_with_one_line(tmp_path, capsys, target):
    root = write_root(tmp_path / "ecg", [{"subject_id": 1, "study_id": 2, "ecg_time": str(T)}])
    labs = write_labs(tmp_path / "labs.csv", [{"subject_id": 1, "itemid": 50971, "charttime": str(T),
                                              "valuenum": 4}])
    if target == "record_list":
        pd.read_csv(root / "record_list.csv").drop(columns=["path", "ecg_time"]).to_csv(root / "record_list.csv",
                                                                                         index=False)
        names = ("record_list.csv", "ecg_time", "path")
    else:
        pd.read_csv(labs).drop(columns=["itemid"]).to_csv(labs, index=False)
        names = ("labs.csv", "itemid")
    code = main(["build", "--ecg-root", str(root), "--labs", str(labs), "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and all(n in err for n in names), err
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_real_mimic_layout_record_through_the_build(wfdb_fixtures, tmp_path):
    """The real PTB-derived MIMIC-layout record: lead II found by name, cleaned like nk.ecg_clean, float16."""
    import neurokit2 as nk
    import wfdb

    src = wfdb_fixtures / "mimic_layout_from_ptb"
    root = tmp_path / "ecg"
    root.mkdir()
    (root / "files").symlink_to(src / "files", target_is_directory=True)
    write_root(root, [{"subject_id": 19999999, "study_id": 49999999, "ecg_time": "2182-09-22 12:04:00"}])
    labs = write_labs(tmp_path / "labs.csv", [{"subject_id": 19999999, "itemid": 50971,
                                              "charttime": "2182-09-22 12:30:00", "valuenum": 5.7}])
    with pytest.raises(EmptyBuildError, match="no ECG paired: 1 of 1 ECGs excluded as unsafe_path"):
        build_dataset(root, [labs], tmp_path / "linked")  # files/ resolves outside the root: unsafe
    assert pd.read_csv(DatasetDir(tmp_path / "linked").exclusions_path)["reason"].tolist() == ["unsafe_path"]
    (root / "files").unlink()
    shutil.copytree(src / "files", root / "files")  # a temporary copy (the fixtures stay in shared/)
    # one ECG cannot fill three splits (the build fails); the kept work folder holds its processed row
    with pytest.raises(EmptyBuildError, match="split val is empty: 1 ECGs of 1 subjects"):
        build_dataset(root, [labs], tmp_path / "out", BuildConfig(keep_work=True))
    work = next(DatasetDir(tmp_path / "out").work_root.iterdir())
    table = read_ipc(WorkDir.rows(next(WorkDir(work).chunks_dir.iterdir())))
    row = table.to_pylist()[0]
    assert row["potassium"] == pytest.approx(5.7) and row["delta_minutes"] == pytest.approx(26.0)
    rec = wfdb.rdrecord(str(src / "files/p1999/p19999999/s49999999/49999999"))
    ref = nk.ecg_clean(rec.p_signal[:, rec.sig_name.index("II")], sampling_rate=500, powerline=60)
    stored = np.asarray(row["signal"], dtype=np.float32)
    np.testing.assert_array_equal(stored, ref.astype(np.float16).astype(np.float32))


def test_lab_file_without_comments_is_reported_in_summary_and_manifest(tmp_path, capsys):
    from test_build_helpers import small_dataset

    root, labs = small_dataset(tmp_path, n_subjects=4, per_subject=1)
    pd.read_csv(labs).drop(columns="comments").to_csv(labs, index=False)
    code = main(["build", "--ecg-root", str(root), "--labs", str(labs), "--out", str(tmp_path / "ds"), "--quiet",
                 "--workers", "1", "split.per_bin_cap=1", "split.holdout_max_fraction=1.0",
                 "split.seed=3", *ONE_BIN])
    text = capsys.readouterr().out  # (4 subjects: all eligible; seed 3 gives both sides a subject)
    assert code == 0
    assert "WARNING: haemolysis rule not applied to 4 potassium rows (no comments column in labevents.csv)" in text
    labs_block = DatasetDir(tmp_path / "ds").read_manifest()["labs"]
    assert labs_block["hemolysis_unchecked"] == 4 and labs_block["hemolysis_unchecked_files"] == ["labevents.csv"]


def _stop_case(tmp_path: Path) -> tuple[Path, Path]:
    """A small root with one corrupt record (bad data) among good ones."""
    from test_build_helpers import small_dataset

    root, labs = small_dataset(tmp_path, n_subjects=6, per_subject=1)
    (root / f"{record_path(10000003, 40000300)}.hea").write_bytes(b"40000300 x 500\n\x00\xff junk\n")
    return root, labs


def _assert_nothing_written(out: Path) -> None:
    ds = DatasetDir(out)
    assert not ds.manifest_path.exists() and not ds.exclusions_path.exists()
    assert not any(ds.split_dir(s).exists() for s in SPLITS)
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]


def test_corrupt_record_stays_an_exclusion(tmp_path):
    root, labs = _stop_case(tmp_path)
    m = build_dataset(root, [labs], tmp_path / "ds", BuildConfig.model_validate(
        {"split": {"per_bin_cap": 1, "holdout_max_fraction": 1.0}, "label": {"step": 8.5}}))
    assert m["exclusions"].get("header_corrupt") == 1


@pytest.mark.parametrize("error", [TypeError("unsupported operand"), AttributeError("'NoneType' has no 'fs'")])
def test_a_bug_on_a_record_stops_the_build_with_one_line(tmp_path, capsys, monkeypatch, error):
    """No config path makes QC itself fail, so the stage's QC collaborator is replaced by one with a bug
    (the readers, the stage and the build stay real). Before the fix: every record a read_error exclusion."""
    import ecgka.data.signal_stage as stage

    def buggy(sig, cfg):
        raise error

    monkeypatch.setattr(stage, "process_signal", buggy)
    root, labs = _stop_case(tmp_path)
    code = main(["build", "--ecg-root", str(root), "--labs", str(labs), "--out", str(tmp_path / "ds"), "--quiet",
                 "--workers", "1"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "signal stage stopped at record files/p1000/p10000000/s40000000/40000000" in err
    assert f"{type(error).__name__}: {error}" in err
    _assert_nothing_written(tmp_path / "ds")


@pytest.mark.parametrize("workers", ["1", "2"])
def test_an_unexpected_error_on_a_whole_chunk_stops_the_build(tmp_path, capsys, workers):
    """A real config path: an unknown cleaning method fails in clean_batch, once per chunk, in the workers."""
    root, labs = _stop_case(tmp_path)
    code = main(["build", "--ecg-root", str(root), "--labs", str(labs), "--out", str(tmp_path / "ds"), "--quiet",
                 "--workers", workers, "signal.clean_method=bogus", "shards.chunk_records=3"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "signal stage stopped in chunk" in err and "ValueError: NeuroKit error: ecg_clean()" in err
    _assert_nothing_written(tmp_path / "ds")
