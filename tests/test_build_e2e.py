"""End-to-end builds on a small stand-in: contract, accounting, fast reader = wfdb, skip, resume after
SIGKILL, process pool = Dask, imbalance variants."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import wfdb

from ecgka.catalog import DatasetDir
from ecgka.cli import main
from ecgka.config import apply_overrides
from ecgka.data.build import build_dataset
from ecgka.data.config import BuildConfig
from ecgka.data.mimic_reader import read_record
from ecgka.data.shards import signal_array
from ecgka.keys import SPLITS, Col
from ecgka.labels import LabelGrid

pytestmark = pytest.mark.slow  # end to end: `make test` runs it, `make test-fast` skips it

OVERRIDES = ["split.per_bin_cap=8", "shards.chunk_records=24", "shards.row_group_rows=64", "shards.part_rows=128"]


def _cfg(extra=()) -> BuildConfig:
    return BuildConfig.model_validate(apply_overrides({}, [*OVERRIDES, *extra]))


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    from ecgka.standin import generate_standin

    out = tmp_path_factory.mktemp("standin") / "mimic"
    generate_standin(out, subjects=300, seed=3, workers=1)
    return out


@pytest.fixture(scope="module")
def built(standin, tmp_path_factory):
    out = tmp_path_factory.mktemp("built") / "ds"
    manifest = build_dataset(standin / "ecg", [standin / "hosp" / "labevents.csv.gz"], out, _cfg(),
                             d_labitems=standin / "hosp" / "d_labitems.csv.gz")
    return out, manifest


def _files(data_dir: Path) -> dict[str, bytes]:
    ds = DatasetDir(data_dir)
    paths = [p for s in SPLITS for p in ds.shards(s)] + [ds.exclusions_path]
    return {str(p.relative_to(data_dir)): p.read_bytes() for p in paths}


def _split_table(data_dir: Path, split: str) -> pa.Table:
    return pa.concat_tables([pq.read_table(p) for p in DatasetDir(data_dir).shards(split)])


def _n_ledger(path: Path) -> int:
    return len(pd.read_csv(path))


def test_contract_and_every_split_filled(built, standin):
    out, m = built
    assert m["status"] == "built"
    for key in ("schema_version", "ecgka_version", "fingerprint", "config", "inputs", "signal", "label", "counts",
                "exclusions", "labs_dropped", "label_histograms", "train_bin_counts", "n_max", "shot_groups"):
        assert key in m
    assert m["signal"] == {"leads": ["II"], "fs": 500, "n_samples": 5000, "unit": "mV", "layout": "lead-major",
                           "dtype": "float16", "cleaning": {"clean": True, "method": "neurokit", "powerline_hz": 60.0,
                                                            "highpass_hz": 0.5}}
    grid = LabelGrid.preset("potassium")
    assert m["label"] == grid.to_dict() and m["parent"] is None
    dropped = sum(v for k, v in m["labs_dropped"].items() if k != "malformed_row")
    assert m["labs"]["potassium_rows"] == m["labs"]["kept"] + dropped and m["labs"]["kept"] > 0
    tables = {s: _split_table(out, s) for s in SPLITS}
    assert all(tables[s].num_rows > 0 for s in SPLITS)
    schema = tables["train"].schema
    assert schema.field(Col.SIGNAL.value).type == pa.list_(pa.float16(), 5000)
    assert schema.field(Col.ECG_TIME.value).type == pa.timestamp("ms")  # whole seconds; Parquet has no [s]
    assert schema.field(Col.POTASSIUM.value).type == pa.float32()
    assert schema.field(Col.ITEMID.value).type == pa.int32()
    ids = np.concatenate([t.column("sample_id").to_numpy() for t in tables.values()])
    assert len(np.unique(ids)) == len(ids)
    subj = {s: set(t.column("subject_id").to_numpy().tolist()) for s, t in tables.items()}
    assert not (subj["train"] & subj["val"]) and not (subj["train"] & subj["test"]) and not (subj["val"] & subj["test"])
    n_list = len(pd.read_csv(standin / "ecg" / "record_list.csv"))
    n_excl = _n_ledger(DatasetDir(out).exclusions_path)
    assert n_list == sum(t.num_rows for t in tables.values()) + n_excl == m["counts"]["record_list"]
    for s, t in tables.items():
        assert m["label_histograms"][s] == {"lo": 1.5, "step": 0.1,
                                            "counts": grid.counts(t.column("potassium").to_numpy()).tolist()}
        d = t.to_pandas()
        delta = (d["lab_time"] - d["ecg_time"]).dt.total_seconds() / 60
        np.testing.assert_allclose(d["delta_minutes"], delta, atol=1e-3)
        assert d["delta_minutes"].abs().max() <= 60
        sig = signal_array(t, 1)
        assert sig.dtype == np.float16 and sig.shape == (t.num_rows, 1, 5000) and np.isfinite(sig).all()
    hv, ht = (np.array(m["label_histograms"][s]["counts"]) for s in ("val", "test"))
    assert hv.max() <= 8 and np.abs(hv - ht).max() <= 1
    groups = m["shot_groups"]
    assert groups == grid.shot_groups(m["train_bin_counts"]["counts"])
    assert sorted(groups["many"] + groups["median"] + groups["few"]) == list(np.flatnonzero(m["train_bin_counts"]["counts"]))


def test_fast_reader_equals_wfdb_on_standin(standin):
    paths = pd.read_csv(standin / "ecg" / "record_list.csv")["path"]
    fast = 0
    for rel in paths:
        rec = standin / "ecg" / rel
        if not Path(f"{rec}.hea").is_file():
            continue
        try:
            ref = wfdb.rdrecord(str(rec))
        except Exception:
            continue
        ours = read_record(rec)
        fast += ours.reader == "fast"
        assert ours.p_signal.tobytes() == ref.p_signal.tobytes() and ours.sig_name == ref.sig_name
    assert fast >= 0.9 * len(paths)


def test_finished_build_is_skipped_and_config_change_rebuilds(built, standin, tmp_path):
    out, m = built
    before = _files(out)
    again = build_dataset(standin / "ecg", [standin / "hosp" / "labevents.csv.gz"], out, _cfg(),
                          d_labitems=standin / "hosp" / "d_labitems.csv.gz")
    assert again["status"] == "skipped" and _files(out) == before
    other = build_dataset(standin / "ecg", [standin / "hosp" / "labevents.csv.gz"], tmp_path / "o",
                          _cfg(["pairing.window_after_min=240"]), d_labitems=standin / "hosp" / "d_labitems.csv.gz")
    assert other["fingerprint"] != m["fingerprint"] and other["counts"]["excluded"] != m["counts"]["excluded"]


def test_resume_after_sigkill_is_byte_identical(built, standin, tmp_path):
    out, _ = built
    target = tmp_path / "killed"
    cmd = [sys.executable, "-m", "ecgka", "build", "--ecg-root", str(standin / "ecg"), "--labs",
           str(standin / "hosp" / "labevents.csv.gz"), "--d-labitems", str(standin / "hosp" / "d_labitems.csv.gz"),
           "--out", str(target), "--quiet", "--workers", "1", *OVERRIDES]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ})
    deadline = time.time() + 120
    while time.time() < deadline and len(list(target.glob("_work/*/chunks/chunk-*"))) < 3:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(list(target.glob("_work/*/chunks/chunk-*")))
    assert done >= 3 and not (target / "manifest.json").exists(), "the build was not interrupted mid-way"
    resumed = build_dataset(standin / "ecg", [standin / "hosp" / "labevents.csv.gz"], target, _cfg(),
                            d_labitems=standin / "hosp" / "d_labitems.csv.gz")
    assert resumed["build"]["resumed"] >= 3
    assert _files(target) == _files(out)
    assert not (target / "_work").exists()


def test_process_pool_and_dask_give_identical_shards(built, standin, tmp_path):
    from dask.distributed import LocalCluster

    out, _ = built
    labs, items = [standin / "hosp" / "labevents.csv.gz"], standin / "hosp" / "d_labitems.csv.gz"
    pool = build_dataset(standin / "ecg", labs, tmp_path / "pool", _cfg(), workers=2, d_labitems=items)
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster:
        # the scheduler address, as `--dask-scheduler ADDRESS` passes it
        dask = build_dataset(standin / "ecg", labs, tmp_path / "dask", _cfg(), dask_scheduler=cluster.scheduler_address,
                             d_labitems=items)
    assert pool["build"]["chunks"] > 2 and dask["build"]["executor"] == "dask"
    assert _files(tmp_path / "pool") == _files(tmp_path / "dask") == _files(out)


def test_variants_are_views_with_exact_accounting(standin, tmp_path):
    from ecgka.training.shard_loading import load_split

    m = build_dataset(standin / "ecg", [standin / "hosp" / "labevents.csv.gz"], tmp_path / "v",
                      _cfg(["variants.ratios=[2,4]"]))
    assert m["variants"] == ["ir2", "ir4"]
    parent = DatasetDir(tmp_path / "v")
    parent_train = load_split(parent.path, "train")
    for name, ratio in (("ir2", 2), ("ir4", 4)):
        vdir = parent.variant(name)
        vm = vdir.read_manifest()
        assert vm["variant"] == {"name": name, "imbalance_ratio": ratio, "parent": "../.."}
        assert not list(vdir.path.rglob("*.parquet"))  # a view: no shard copies
        counts = np.array(vm["train_bin_counts"]["counts"])
        assert counts[counts > 0].max() <= ratio * counts[counts > 0].min()
        for s in SPLITS:
            assert vdir.shards(s) == parent.shards(s)
        own = pd.read_csv(vdir.exclusions_path)
        assert set(own["reason"]) == {"not_selected_for_variant"}
        train = load_split(vdir.path, "train")
        assert len(train) == vm["counts"]["train"] <= m["counts"]["train"]
        assert set(train.sample_ids) == set(parent_train.sample_ids) - set(own["row"])
        assert train.signals.filename == parent_train.signals.filename  # the parent's cache, index-mapped
        i = np.searchsorted(parent_train.sample_ids, train.sample_ids[[0, -1]])
        np.testing.assert_array_equal(np.asarray(train.signals[train.rows[[0, -1]]]),
                                      np.asarray(parent_train.signals[i]))
        n_ledgers = _n_ledger(parent.exclusions_path) + len(own)
        assert len(vdir.read_exclusions()) == n_ledgers == vm["counts"]["excluded"]
        assert len(train) + vm["counts"]["val"] + vm["counts"]["test"] + n_ledgers == m["counts"]["record_list"]
        held = set(_split_table(parent.path, "val").column("subject_id").to_numpy().tolist())
        assert not set(train.subject_ids.tolist()) & held


def test_cli_prints_summary(standin, tmp_path, capsys):
    code = main(["build", "--ecg-root", str(standin / "ecg"), "--labs", str(standin / "hosp" / "labevents.csv.gz"),
                 "--out", str(tmp_path / "cli"), "--quiet", "--workers", "1", *OVERRIDES])
    text = capsys.readouterr().out
    assert code == 0 and "record_list" in text and "train" in text and "no_lab_in_window" in text


def _subject_splits(data_dir: Path) -> dict[int, str]:
    import pyarrow.dataset as pads

    table = pads.dataset(data_dir, format="parquet", partitioning="hive", exclude_invalid_files=True).to_table(
        columns=[Col.SUBJECT_ID.value, "split"])
    frame = table.to_pandas().drop_duplicates()
    assert not frame[Col.SUBJECT_ID.value].duplicated().any()  # splits are disjoint by subject
    return dict(zip(frame[Col.SUBJECT_ID.value].astype(int), frame["split"].astype(str), strict=True))


@pytest.mark.parametrize("lost_split", ["train", "test"])
def test_losing_one_subjects_files_moves_at_most_one_other_subject(standin, built, tmp_path, lost_split):
    """A subject's split depends on that subject: losing one subject's .dat files (a training subject, or a
    held-out one, whose place a per-bin cap gives to the bin's next subject) moves at most one other."""
    before = _subject_splits(built[0])
    lost = sorted(s for s, split in before.items() if split == lost_split)[len(before) % 7]
    dats = sorted((standin / "ecg" / "files").glob(f"p{str(lost)[:4]}/p{lost}/s*/*.dat"))
    assert dats
    for dat in dats:
        dat.rename(dat.with_suffix(".gone"))
    try:
        build_dataset(standin / "ecg", [standin / "hosp" / "labevents.csv.gz"], tmp_path / "ds", _cfg(),
                      d_labitems=standin / "hosp" / "d_labitems.csv.gz")
    finally:
        for dat in dats:
            dat.with_suffix(".gone").rename(dat)
    after = _subject_splits(tmp_path / "ds")
    assert lost not in after
    moved = sorted(s for s in before.keys() & after.keys() if before[s] != after[s])
    assert len(moved) <= 1, moved
    assert before.keys() - after.keys() == {lost}
