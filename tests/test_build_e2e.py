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

from ecgka.cli import main
from ecgka.config import apply_overrides
from ecgka.data.build import build_dataset
from ecgka.data.config import BuildConfig
from ecgka.data.mimic_reader import read_record
from ecgka.data.shards import signal_array, split_parts
from ecgka.data.splits import histogram
from ecgka.keys import SPLITS, Col

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
    names = [f"{s}/{p.name}" for s in SPLITS for p in split_parts(data_dir, s)] + ["exclusions.parquet"]
    return {n: (data_dir / n).read_bytes() for n in names}


def test_contract_and_every_split_filled(built, standin):
    out, m = built
    assert m["status"] == "built"
    for key in ("schema_version", "ecgka_version", "fingerprint", "config", "inputs", "signal", "label", "counts",
                "exclusions", "labs_dropped", "label_histograms", "train_bin_counts", "n_max", "shot_groups"):
        assert key in m
    assert m["signal"] == {"leads": ["II"], "fs": 500, "n_samples": 5000}
    dropped = sum(v for k, v in m["labs_dropped"].items() if k != "malformed_row")
    assert m["labs"]["potassium_rows"] == m["labs"]["kept"] + dropped and m["labs"]["kept"] > 0
    tables = {s: pq.ParquetDataset(out / s).read() for s in SPLITS}
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
    n_excl = pq.read_metadata(out / "exclusions.parquet").num_rows
    assert n_list == sum(t.num_rows for t in tables.values()) + n_excl == m["counts"]["record_list"]
    for s, t in tables.items():
        assert m["label_histograms"][s]["counts"] == histogram(t.column("potassium").to_numpy(), 1.5, 10.0, 0.1)
        d = t.to_pandas()
        delta = (d["lab_time"] - d["ecg_time"]).dt.total_seconds() / 60
        np.testing.assert_allclose(d["delta_minutes"], delta, atol=1e-3)
        assert d["delta_minutes"].abs().max() <= 60
        sig = signal_array(t, 1)
        assert sig.dtype == np.float16 and sig.shape == (t.num_rows, 1, 5000) and np.isfinite(sig).all()
    hv, ht = (np.array(m["label_histograms"][s]["counts"]) for s in ("val", "test"))
    assert hv.max() <= 8 and np.abs(hv - ht).max() <= 1
    groups = m["shot_groups"]
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


def test_variants_keep_val_test_and_accounting(standin, tmp_path):
    m = build_dataset(standin / "ecg", [standin / "hosp" / "labevents.csv.gz"], tmp_path / "v",
                      _cfg(["variants.ratios=[2,4]"]))
    assert m["variants"] == ["ir2", "ir4"]
    for name, ratio in (("ir2", 2), ("ir4", 4)):
        vdir = tmp_path / "v" / "variants" / name
        vm = pd.read_json(vdir / "manifest.json", typ="series")
        counts = np.array(vm["train_bin_counts"]["counts"])
        assert counts[counts > 0].max() <= ratio * counts[counts > 0].min()
        for s in ("val", "test"):
            assert [p.read_bytes() for p in split_parts(vdir, s)] == [p.read_bytes() for p in split_parts(tmp_path / "v", s)]
        n_train = pq.ParquetDataset(vdir / "train").read().num_rows
        assert n_train == vm["counts"]["train"] <= m["counts"]["train"]
        n_excl = pq.read_metadata(vdir / "exclusions.parquet").num_rows
        assert n_train + vm["counts"]["val"] + vm["counts"]["test"] + n_excl == m["counts"]["record_list"]
        train_subj = set(pq.ParquetDataset(vdir / "train").read().column("subject_id").to_numpy().tolist())
        held = set(pq.ParquetDataset(tmp_path / "v" / "val").read().column("subject_id").to_numpy().tolist())
        assert not train_subj & held


def test_cli_prints_summary(standin, tmp_path, capsys):
    code = main(["build", "--ecg-root", str(standin / "ecg"), "--labs", str(standin / "hosp" / "labevents.csv.gz"),
                 "--out", str(tmp_path / "cli"), "--quiet", "--workers", "1", *OVERRIDES])
    text = capsys.readouterr().out
    assert code == 0 and "record_list" in text and "train" in text and "no_lab_in_window" in text
