"""Header file names and record paths are untrusted: whatever resolves outside the record's folder or the
ECG root is excluded as ``unsafe_path`` before it is opened, by the fast reader and before wfdb alike.

The outside targets are folders: a reader that opened one would fail with another reason (IsADirectoryError
-> read_error / file_missing), so the reason proves the check came first.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_build_helpers import ecg_digital, record_path, write_labs, write_record, write_root

from ecgka.catalog import DatasetDir
from ecgka.data.build import build_dataset
from ecgka.data.config import BuildConfig
from ecgka.data.mimic_reader import RecordError, read_record

REL = record_path(10000001, 41)


def _rename_dat(base: Path, name: str) -> None:
    """Point every signal line of the record's header at ``name`` (the fixtures' layout otherwise)."""
    hea = Path(f"{base}.hea")
    lines = hea.read_text().splitlines()
    hea.write_text("\n".join([lines[0], *[" ".join([name, *ln.split()[1:]]) for ln in lines[1:-1]], lines[-1]]) + "\n")


@pytest.fixture
def layout(tmp_path):
    """root/ with one record; outside/ next to it holds a folder named like a data file."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    base = write_record(root, REL, ecg_digital(1))
    (outside / "41.dat").mkdir(parents=True)
    return root, outside, base


def _reason(base: Path, root: Path, fast: bool) -> str:
    with pytest.raises(RecordError) as info:
        read_record(base, fast=fast, root=root)
    return info.value.reason


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("name", ["abs", "../../../../../../outside/41.dat", "a/41.dat", "..", "a\\41.dat"])
def test_unsafe_file_names_in_header(layout, fast, name):
    root, outside, base = layout
    if name == "abs":
        name = str(outside / "41.dat")
    (base.parent / "a").mkdir()
    (base.parent / "a" / "41.dat").mkdir()  # a/41.dat inside the folder: still not a plain name
    _rename_dat(base, name)
    assert _reason(base, root, fast) == "unsafe_path"


@pytest.mark.parametrize("fast", [True, False])
def test_wfdb_only_header_is_checked_before_wfdb(layout, fast):
    """A format-212 header goes to wfdb (the fast reader does not take it): its names are checked first."""
    root, outside, base = layout
    _rename_dat(base, "../../../../../../outside/41.dat")
    hea = Path(f"{base}.hea")
    hea.write_text(hea.read_text().replace(" 16 200.0(0)/mV", " 212 200.0(0)/mV"))
    assert _reason(base, root, fast) == "unsafe_path"


@pytest.mark.parametrize("fast", [True, False])
def test_dat_symlink_out_of_root_is_unsafe(layout, fast):
    root, outside, base = layout
    dat = Path(f"{base}.dat")
    dat.unlink()
    dat.symlink_to(outside / "41.dat")
    assert _reason(base, root, fast) == "unsafe_path"


@pytest.mark.parametrize("fast", [True, False])
def test_record_and_folder_symlinks_out_of_root_are_unsafe(layout, fast):
    root, outside, base = layout
    hea = Path(f"{base}.hea")
    elsewhere = write_record(outside, "rec/41", ecg_digital(2))
    hea.unlink()
    hea.symlink_to(f"{elsewhere}.hea")
    assert _reason(base, root, fast) == "unsafe_path"
    linked = root / "files" / "linked"
    linked.symlink_to(elsewhere.parent, target_is_directory=True)
    assert _reason(linked / "41", root, fast) == "unsafe_path"


@pytest.mark.parametrize("fast", [True, False])
def test_symlinks_inside_the_root_are_fine(layout, fast):
    root, _, base = layout
    store = write_record(root, "store/41", ecg_digital(1))
    for ext in (".hea", ".dat"):
        Path(f"{base}{ext}").unlink()
        Path(f"{base}{ext}").symlink_to(f"{store}{ext}")
    sig = read_record(base, fast=fast, root=root)
    assert sig.reader == ("fast" if fast else "wfdb") and sig.p_signal.shape == (5000, 12)
    np.testing.assert_array_equal(sig.p_signal, read_record(store, fast=fast, root=root).p_signal)


def test_symlink_loop_is_unsafe_not_a_crash(layout):
    root, _, base = layout
    dat = Path(f"{base}.dat")
    dat.unlink()
    os.symlink(dat, dat)
    assert _reason(base, root, True) == "unsafe_path"


def test_build_excludes_unsafe_header_names_and_keeps_the_rest(tmp_path):
    root, outside = tmp_path / "ecg", tmp_path / "outside"
    (outside / "x.dat").mkdir(parents=True)
    t = pd.Timestamp("2150-01-01 08:00:00")
    rows, labs = [], []
    for k in range(6):
        subject, study = 10000000 + k, 40000000 + k
        base = write_record(root, record_path(subject, study), ecg_digital(k))
        if k < 2:
            _rename_dat(base, str(outside / "x.dat") if k == 0 else "../../../../../outside/x.dat")
        rows.append({"subject_id": subject, "study_id": study, "ecg_time": str(t)})
        labs.append({"subject_id": subject, "itemid": 50971, "charttime": str(t), "valuenum": 4.0 + k / 10})
    write_root(root, rows)
    cfg = BuildConfig.model_validate({"split": {"per_bin_cap": 1, "holdout_max_fraction": 1.0}, "shards": {"chunk_records": 2},
                                     "label": {"step": 8.5}})
    build_dataset(root, [write_labs(tmp_path / "labs.csv", labs)], tmp_path / "ds", cfg)
    excl = DatasetDir(tmp_path / "ds").read_exclusions()
    unsafe = excl[excl["reason"] == "unsafe_path"]
    assert sorted(unsafe["study_id"]) == [40000000, 40000001]
    assert unsafe["detail"].str.contains("not a plain file name").all()
