"""Dataset versions (`ecgka build --previous`): labs union and corrections, reuse of processed ECGs (the
reader is not called for them: real calls counted), split stability, lineage counts and `ecgka lineage`."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from ecgka.catalog import DatasetDir
from ecgka.cli import main
from ecgka.config import apply_overrides
from ecgka.data import signal_stage
from ecgka.data.build import build_dataset
from ecgka.data.config import BuildConfig
from ecgka.data.dataset_versions import NOT_READ, read_pairs
from ecgka.data.shards import read_ipc
from ecgka.keys import SPLITS, Col

# splits pair a val and a test subject within one label bin (schema 3): 0.5-wide bins for 28 subjects
OVERRIDES = ["split.per_bin_cap=3", "shards.chunk_records=24", "label.step=0.5"]
K_ITEMS = ("50971", "50822")
N_CORRECTED = 5


def _cfg(extra=()) -> BuildConfig:
    return BuildConfig.model_validate(apply_overrides({}, [*OVERRIDES, *extra]))


def make_exports(labevents: Path, out: Path) -> tuple[Path, Path, pd.DataFrame]:
    """export1: 70 % of the subjects, a quarter of their potassium rows held back; export2 (incremental):
    the held-back rows (labs for ECGs already on disk), the other subjects, 5 corrected values and 20
    rows repeated from export1. Returns the paths and the corrected rows."""
    df = pd.read_csv(labevents, dtype=str, keep_default_na=False)
    subjects = sorted(df["subject_id"].unique(), key=int)
    old = df["subject_id"].isin(subjects[: int(len(subjects) * 0.7)])
    potassium = df["itemid"].isin(K_ITEMS)
    key = df["subject_id"] + "|" + df["charttime"] + "|" + df["itemid"]
    draw = pd.Series(np.random.default_rng(0).random(len(df)), index=df.index).groupby(key).transform("first")
    held_back = potassium & (draw < 0.25)  # whole labs (every row of a subject, charttime, item)
    v1 = df[old & ~held_back]
    # corrections: labs alone at their (subject, charttime, itemid), so each is exactly one changed lab
    single = v1[v1["itemid"] == "50971"]
    single = single[~single.duplicated(["subject_id", "charttime", "itemid"], keep=False)]
    corrected = single.sample(N_CORRECTED, random_state=1).copy()
    corrected["valuenum"] = (corrected["valuenum"].astype(float) + 0.7).round(1).astype(str)
    corrected["labevent_id"] = corrected["labevent_id"] + "9"
    repeated = v1[v1["itemid"] == "50971"].sample(20, random_state=2)
    e1, e2 = out / "export1.csv", out / "export2.csv"
    v1.to_csv(e1, index=False)
    pd.concat([df[~old | held_back], corrected, repeated]).to_csv(e2, index=False)
    return e1, e2, corrected


class CountingReader:
    """The real reader, counting its calls (paths)."""

    def __init__(self, real):
        self.real, self.paths = real, []

    def __call__(self, path, *args, **kwargs):
        self.paths.append(Path(path))
        return self.real(path, *args, **kwargs)


@pytest.fixture(scope="module")
def versions(tmp_path_factory):
    from ecgka.standin import generate_standin

    root = tmp_path_factory.mktemp("versions")
    generate_standin(root / "mimic", subjects=60, seed=3, workers=1)
    exports = root / "exports"
    exports.mkdir()
    e1, e2, corrected = make_exports(root / "mimic" / "hosp" / "labevents.csv.gz", exports)
    ecg = root / "mimic" / "ecg"
    bad = _truncate_one_subject(ecg, e1)
    m1 = build_dataset(ecg, [e1], root / "v1", _cfg(), workers=1)
    e1.unlink()  # the old export is gone: the new version never needs it
    mp = pytest.MonkeyPatch()
    reader = CountingReader(signal_stage.read_record)
    mp.setattr(signal_stage, "read_record", reader)  # inline executor (workers=1): the real calls are counted
    try:
        m2 = build_dataset(ecg, [e2], root / "v2", _cfg(), workers=1, previous=root / "v1")
    finally:
        mp.undo()
    return {"root": root, "ecg": ecg, "e2": e2, "m1": m1, "m2": m2, "reader": reader, "corrected": corrected,
            "bad": bad}


def _truncate_one_subject(ecg: Path, export: Path) -> int:
    """Truncate the signal files of the subject with the most potassium rows in ``export``: its paired ECGs
    are excluded for a signal reason in v1 (a reason the next version reuses without reading)."""
    labs = pd.read_csv(export, usecols=["subject_id", "itemid"])
    subject = int(labs[labs["itemid"] == 50971]["subject_id"].value_counts().index[0])
    records = pd.read_csv(ecg / "record_list.csv")
    for rel in records.loc[records["subject_id"] == subject, "path"]:
        dat = ecg / f"{rel}.dat"
        dat.write_bytes(dat.read_bytes()[: dat.stat().st_size // 2])
    return subject


def _ledger(path: Path) -> pd.DataFrame:
    return DatasetDir(path).read_exclusions()


def test_subjects_keep_their_split(versions):
    p1, p2 = read_pairs(DatasetDir(versions["root"] / "v1")), read_pairs(DatasetDir(versions["root"] / "v2"))
    held1 = p1[p1["split"] != "train"]
    train2 = set(p2.loc[p2["split"] == "train", Col.SUBJECT_ID.value])
    assert not set(held1[Col.SUBJECT_ID.value]) & train2
    for split in ("val", "test"):  # the previous val/test sets stay whole: same ECGs, same split
        old = set(p1.loc[p1["split"] == split, Col.STUDY_ID.value])
        assert old <= set(p2.loc[p2["split"] == split, Col.STUDY_ID.value])
    assert set(p1.loc[p1["split"] == "train", Col.SUBJECT_ID.value]) <= train2
    for split in SPLITS:  # subject-disjoint, one sample per held-out subject
        others = set(p2.loc[p2["split"] != split, Col.SUBJECT_ID.value])
        assert not set(p2.loc[p2["split"] == split, Col.SUBJECT_ID.value]) & others
    assert not p2[p2["split"] != "train"][Col.SUBJECT_ID.value].duplicated().any()
    cap = _cfg().split.per_bin_cap
    grid = _cfg().label.grid
    for split in ("val", "test"):  # new subjects only where a bin is below its cap
        new = p2[(p2["split"] == split) & ~p2[Col.SUBJECT_ID.value].isin(p1[Col.SUBJECT_ID.value])]
        counts = np.bincount(grid.clipped_index(p2.loc[p2["split"] == split, Col.POTASSIUM.value].to_numpy()),
                             minlength=grid.n_bins)
        assert (counts[grid.clipped_index(new[Col.POTASSIUM.value].to_numpy())] <= cap).all()
    assert versions["m2"]["split_salt"] == versions["m1"]["split_salt"] == versions["m1"]["fingerprint"]


def test_held_out_subjects_other_ecgs_are_not_read(versions):
    p1 = read_pairs(DatasetDir(versions["root"] / "v1"))
    held = p1[p1["split"] != "train"]
    ledger = _ledger(versions["root"] / "v2")
    other = ledger[ledger["subject_id"].isin(held[Col.SUBJECT_ID.value]) & (ledger["detail"] == NOT_READ)]
    assert (other["reason"] == "not_selected_for_split").all()
    read = {p.name for p in versions["reader"].paths}
    assert not {Path(p).name for p in other["path"]} & read


def test_reused_ecgs_are_not_read_again(versions):
    root = versions["root"]
    p1 = read_pairs(DatasetDir(root / "v1"))
    l1 = _ledger(root / "v1")
    signal_excluded = l1[~l1["reason"].isin(["no_lab_in_window", "not_selected_for_split"])]
    assert len(signal_excluded) and (signal_excluded["subject_id"] == versions["bad"]).all()
    l2 = _ledger(root / "v2").set_index("study_id")
    kept = l2.loc[signal_excluded["study_id"]]
    assert (kept["reason"].to_numpy() == signal_excluded["reason"].to_numpy()).all()  # the exclusion is reused
    records = pd.read_csv(versions["ecg"] / "record_list.csv")
    done = records[records["study_id"].isin(set(p1[Col.STUDY_ID.value]) | set(signal_excluded["study_id"]))]
    read = {p.name for p in versions["reader"].paths}
    assert read and not read & {Path(p).name for p in done["path"]}
    build = versions["m2"]["build"]
    assert build["read"] == len(versions["reader"].paths)
    # every record read is one that v1 did not process (no lab then)
    no_lab1 = set(l1.loc[l1["reason"] == "no_lab_in_window", "path"].map(lambda p: Path(p).name))
    assert read <= no_lab1
    # reused signals are the v1 bytes
    t1 = pq.read_table(DatasetDir(root / "v1").shards("train")).to_pandas().set_index(Col.STUDY_ID.value)
    t2 = pq.read_table(DatasetDir(root / "v2").shards("train")).to_pandas().set_index(Col.STUDY_ID.value)
    both = t1.index.intersection(t2.index)
    assert len(both) and all(np.array_equal(t1.at[s, Col.SIGNAL.value], t2.at[s, Col.SIGNAL.value]) for s in both)


def test_lineage_counts(versions):
    root, m2 = versions["root"], versions["m2"]
    p1, p2 = read_pairs(DatasetDir(root / "v1")), read_pairs(DatasetDir(root / "v2"))
    cols = [Col.LAB_TIME.value, Col.ITEMID.value, Col.POTASSIUM.value]
    for split in SPLITS:
        a = p1[p1["split"] == split].set_index(Col.STUDY_ID.value)
        b = p2[p2["split"] == split].set_index(Col.STUDY_ID.value)
        both = a.index.intersection(b.index)
        expected = {"pairs": len(b), "added": len(b.index.difference(a.index)),
                    "removed": len(a.index.difference(b.index)),
                    "changed": int((a.loc[both, cols] != b.loc[both, cols]).any(axis=1).sum()),
                    "subjects_new": len(set(b[Col.SUBJECT_ID.value]) - set(a[Col.SUBJECT_ID.value]))}
        assert m2["changes"][split] == expected
    assert sum(m2["changes"][s]["added"] for s in SPLITS) > 0
    assert m2["lab_changes"]["changed"] == N_CORRECTED and m2["lab_changes"]["repeated"] == 20
    assert m2["parent"] == {"path": str((root / "v1").resolve()), "digest": versions["m1"]["digest"],
                            "fingerprint": versions["m1"]["fingerprint"]}
    assert [e["name"] for e in m2["exports"]] == ["export1.csv", "export2.csv"]
    assert m2["exports"][1]["sha256"] == m2["inputs"]["labs"][0]["sha256"]
    assert m2["digest"] != versions["m1"]["digest"]


def test_corrected_values_replace_old_ones(versions):
    labs = read_ipc(DatasetDir(versions["root"] / "v2").labs_path).to_pandas()
    for _, row in versions["corrected"].iterrows():
        t = int(pd.Timestamp(row["charttime"]).value // 10**9)
        hit = labs[(labs["subject_id"] == int(row["subject_id"])) & (labs["time_s"] == t) & (labs["itemid"] == 50971)]
        assert np.allclose(hit["value"], float(row["valuenum"]))
    # a row repeated across exports counts once
    assert not labs.duplicated().any()


def test_rebuild_is_deterministic_and_cli_lineage(versions, tmp_path, capsys):
    root = versions["root"]
    assert main(["build", "--previous", str(root / "v1"), "--labs", str(versions["e2"]), "--ecg-root",
                 str(versions["ecg"]), "--out", str(tmp_path / "v2b"), "--workers", "1", "--quiet", *OVERRIDES]) == 0
    out = capsys.readouterr().out
    assert f"digest {versions['m2']['digest']}" in out and "corrected" in out
    assert main(["lineage", str(tmp_path / "v2b")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].startswith(versions["m2"]["digest"]) and "export1.csv, export2.csv" in lines[0]
    assert lines[1].startswith(versions["m1"]["digest"])
    moved = root / "v1-moved"
    shutil.copytree(root / "v1", moved)
    shutil.rmtree(root / "v1")
    try:
        assert main(["lineage", str(tmp_path / "v2b")]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert len(lines) == 2 and "not found" in lines[1] and "moved or deleted" in lines[1]
    finally:
        shutil.move(moved, root / "v1")


def test_other_signal_config_reads_everything_again(versions, tmp_path, monkeypatch):
    reader = CountingReader(signal_stage.read_record)
    monkeypatch.setattr(signal_stage, "read_record", reader)
    lines = []
    m = build_dataset(versions["ecg"], [versions["e2"]], tmp_path / "v3", _cfg(["signal.flat_std_mv=0.02"]),
                      workers=1, previous=versions["root"] / "v1", log=lines.append)
    assert any("every ECG is read again" in line for line in lines)
    assert m["build"]["read"] == len(reader.paths) >= versions["m2"]["build"]["read"] + versions["m1"]["counts"]["train"]


def test_previous_errors(versions, tmp_path):
    from ecgka.errors import InputError

    with pytest.raises(InputError, match="is the --previous version"):
        build_dataset(versions["ecg"], [versions["e2"]], versions["root"] / "v1", _cfg(), previous=versions["root"] / "v1")
    with pytest.raises(InputError, match="manifest"):
        build_dataset(versions["ecg"], [versions["e2"]], tmp_path / "x", _cfg(), previous=tmp_path / "nothing")
    old = tmp_path / "old-ecgka"  # a dataset built before versions: no labs.arrow
    shutil.copytree(versions["root"] / "v1", old)
    DatasetDir(old).labs_path.unlink()
    with pytest.raises(InputError, match="without dataset versions"):
        build_dataset(versions["ecg"], [versions["e2"]], tmp_path / "y", _cfg(), previous=old)


def test_reuse_follows_study_ids_when_the_record_list_changes(versions, tmp_path, monkeypatch):
    """A new ECG release lists the records in another order (other sample_ids): reuse matches study_id."""
    import os

    root = tmp_path / "ecg"
    shutil.copytree(versions["ecg"], root, copy_function=os.link)  # hard links: same files, own record list
    records = pd.read_csv(versions["ecg"] / "record_list.csv", dtype=str)
    (root / "record_list.csv").unlink()
    records.iloc[::-1].to_csv(root / "record_list.csv", index=False)
    reader = CountingReader(signal_stage.read_record)
    monkeypatch.setattr(signal_stage, "read_record", reader)
    m = build_dataset(root, [versions["e2"]], tmp_path / "v2r", _cfg(), workers=1, previous=versions["root"] / "v1")
    assert m["build"]["read"] == len(reader.paths) == versions["m2"]["build"]["read"]
    p1 = read_pairs(DatasetDir(versions["root"] / "v1"))
    t1 = pq.read_table(DatasetDir(versions["root"] / "v1").shards("test")).to_pandas().set_index(Col.STUDY_ID.value)
    t2 = pq.read_table(DatasetDir(tmp_path / "v2r").shards("test")).to_pandas().set_index(Col.STUDY_ID.value)
    assert set(p1.loc[p1["split"] == "test", Col.STUDY_ID.value]) <= set(t2.index)
    assert (t1[Col.SAMPLE_ID.value] != t2.loc[t1.index, Col.SAMPLE_ID.value]).any()  # other sample ids ...
    assert all(np.array_equal(t1.at[s, Col.SIGNAL.value], t2.at[s, Col.SIGNAL.value]) for s in t1.index)  # same ECGs
