"""Output folders: ecgka writes only into a missing, empty or same-kind folder (its marker),
replaces other content of the same kind only with --force, and never leaves a user's file mixed or lost;
empty builds fail with one line and keep the ledger; mismatched datasets are refused (issue 12)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from report_factory import fake_manifest, make_run
from test_build_helpers import small_dataset

from ecgka.catalog import FOLDER_MARKER, ClaimState, DatasetDir, FolderKind, RunDir, claim_folder, folder_kind
from ecgka.cli import main
from ecgka.errors import InputError
from ecgka.evaluation.evaluate import other_dataset

TINY = ["--quiet", "--workers", "1", "split.per_bin_cap=1", "label.step=8.5", "split.holdout_max_fraction=1.0"]


def _one_line_error(capsys, code: int, pattern: str) -> str:
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code == 2, captured
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert pytest.importorskip("re").search(pattern, err), err
    return err


# --- the rule ---------------------------------------------------------------------------------------
def test_claim_missing_empty_and_marked_folders(tmp_path):
    assert claim_folder(tmp_path / "new", FolderKind.DATASET).state is ClaimState.NEW
    (tmp_path / "empty").mkdir()
    claim = claim_folder(tmp_path / "empty", FolderKind.REPORT)
    assert claim.state is ClaimState.NEW
    claim.write_marker("abc")
    again = claim_folder(tmp_path / "empty", FolderKind.REPORT)
    assert again.state is ClaimState.SAME_KIND and again.content == "abc"
    assert json.loads((tmp_path / "empty" / FOLDER_MARKER).read_text())["kind"] == "report"
    assert not again.check_replace("abc", force=False) and again.check_replace("xyz", force=True)
    with pytest.raises(InputError, match="pass --force to replace it"):
        again.check_replace("xyz", force=False)


@pytest.mark.parametrize(("setup", "message"), [
    (lambda p: p.write_text("x"), "is a file, not a folder"),
    (lambda p: (p.mkdir(), (p / "mine.txt").write_text("x")), "not written by ecgka .*'mine.txt'"),
    (lambda p: (p.mkdir(), (p / FOLDER_MARKER).write_text('{"kind": "run"}')), "is an ecgka run folder, not a dataset"),
    (lambda p: (p.mkdir(), (p / FOLDER_MARKER).write_text('{"kind": "report"}')), "is an ecgka report folder"),
    (lambda p: (p.mkdir(), (p / FOLDER_MARKER).write_text("{oops")), "unreadable folder marker"),
])
def test_claim_refuses_what_is_not_a_dataset_folder(tmp_path, setup, message):
    path = tmp_path / "out"
    setup(path)
    with pytest.raises(InputError, match=message):
        claim_folder(path, FolderKind.DATASET)


def test_claim_below_a_file_and_a_folder_without_marker(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError, match="is a file, cannot create"):
        claim_folder(tmp_path / "f" / "sub", FolderKind.RUN)
    old = tmp_path / "old"
    old.mkdir()
    (old / "manifest.json").write_text("{}")  # no marker: not ecgka's, whatever its files are called
    assert folder_kind(old) is None
    with pytest.raises(InputError, match="not written by ecgka") as info:
        claim_folder(old, FolderKind.DATASET)
    assert len(str(info.value).splitlines()) == 1


# --- report -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    manifest = fake_manifest(root / "data")
    other = {**manifest, "fingerprint": "other0123456789"}
    return {"a": make_run(root, "a", manifest, n_boot=20), "b": make_run(root, "b", manifest, seed=2, n_boot=20),
            "x": make_run(root, "x", other, seed=3, n_boot=20), "root": root}


def test_report_never_deletes_a_users_file(runs, tmp_path, capsys):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    code = main(["report", str(runs["a"]), "--out", str(out)])
    _one_line_error(capsys, code, "precious: folder is not empty and was not written by ecgka")
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and (out / "notes.txt").read_text() == "mine"


def test_report_out_is_a_file(runs, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    _one_line_error(capsys, main(["report", str(runs["a"]), "--out", str(tmp_path / "file")]), "is a file")
    assert (tmp_path / "file").read_text() == "x"


@pytest.mark.slow
def test_report_regenerated_replaced_with_force(runs, tmp_path, capsys):
    out = tmp_path / "rep"
    assert main(["report", str(runs["a"]), "--out", str(out)]) == 0
    assert json.loads((out / FOLDER_MARKER).read_text())["kind"] == "report"
    assert main(["report", str(runs["a"]), "--out", str(out)]) == 0  # same runs: regenerated freely
    capsys.readouterr()
    code = main(["report", str(runs["a"]), str(runs["b"]), "--out", str(out)])
    _one_line_error(capsys, code, "holds a report of other runs.*--force")
    assert main(["report", str(runs["a"]), str(runs["b"]), "--out", str(out), "--force"]) == 0
    assert "replaced a report of other runs" in capsys.readouterr().out
    assert set(json.loads((out / "metrics.json").read_text())["runs"]) == {"a", "b"}


def test_report_refuses_runs_of_different_datasets(runs, tmp_path, capsys):
    code = main(["report", str(runs["a"]), str(runs["x"]), "--out", str(tmp_path / "mix")])
    _one_line_error(capsys, code, "different datasets .*other0123456789: x")
    assert not (tmp_path / "mix").exists()


@pytest.mark.slow
def test_report_grouped_by_dataset_never_compares_across_datasets(runs, tmp_path, capsys):
    out = tmp_path / "grouped"
    assert main(["report", str(runs["a"]), str(runs["b"]), str(runs["x"]), "--out", str(out),
                 "--group-by-dataset"]) == 0
    index = json.loads((out / "metrics.json").read_text())
    assert index["grouped_by_dataset"] is True
    assert {fp: d["runs"] for fp, d in index["datasets"].items()} == {"fp0123abcd": ["a", "b"],
                                                                        "other0123456789": ["x"]}
    page = (out / "report.html").read_text()
    assert "fp0123abcd" in page and "other0123456789" in page  # the header lists every dataset
    for fp, d in index["datasets"].items():
        sub = out / Path(d["report"]).parent
        assert (sub / "report.html").is_file() and fp in (sub / "report.html").read_text()
        assert set(json.loads((sub / "metrics.json").read_text())["runs"]) == set(d["runs"])
    # the table of dataset x holds only x: no row, best mark or improvement compares it with a or b
    solo = pd.read_csv(out / "datasets" / "other0123456789" / "tables" / "results.csv")
    assert len(solo) == 1


def test_report_into_a_dataset_folder_is_refused(runs, tmp_path, capsys):
    data = tmp_path / "data"
    claim_folder(data, FolderKind.DATASET).write_marker("fp")
    (data / "manifest.json").write_text((runs["root"] / "data" / "manifest.json").read_text())
    _one_line_error(capsys, main(["report", str(runs["a"]), "--out", str(data)]),
                    "is an ecgka dataset folder, not a report folder")


# --- evaluate on another dataset ---------------------------------------------------------------------
def test_other_dataset_refused_unless_allowed(tmp_path):
    run, same, other = {"dataset_fingerprint": "aaa"}, SimpleNamespace(fingerprint="aaa"), SimpleNamespace(fingerprint="bbb")
    assert other_dataset(run, same, tmp_path, False) is None
    assert other_dataset({}, other, tmp_path, False) is None
    with pytest.raises(InputError, match="not the run's training dataset .*--allow-other-dataset"):
        other_dataset(run, other, tmp_path, False)
    assert other_dataset(run, other, tmp_path, True) == "bbb"
    assert RunDir(tmp_path).metrics_path("test", "bbb") == tmp_path / "eval" / "bbb" / "test" / "metrics.json"
    assert RunDir(tmp_path).metrics_path("test") == tmp_path / "eval" / "test" / "metrics.json"


# --- build ------------------------------------------------------------------------------------------
def _build(root, labs, out, *extra):
    return main(["build", "--ecg-root", str(root), "--labs", str(labs), "--out", str(out), *TINY, *extra])


@pytest.mark.parametrize(("setup", "message"), [
    (lambda p: p.write_text("x"), "is a file, not a folder"),
    (lambda p: (p.mkdir(), (p / "mine.txt").write_text("x")), "not written by ecgka"),
    (lambda p: (p.mkdir(), (p / FOLDER_MARKER).write_text('{"kind": "run"}')), "is an ecgka run folder"),
])
def test_build_refuses_a_file_or_a_foreign_folder(tmp_path, capsys, setup, message):
    out = tmp_path / "out"
    setup(out)
    before = sorted(p.name for p in out.iterdir()) if out.is_dir() else None
    _one_line_error(capsys, _build(tmp_path / "nowhere", tmp_path / "labs.csv", out), message)
    assert (sorted(p.name for p in out.iterdir()) if out.is_dir() else None) == before


def test_build_replaces_another_dataset_only_with_force(tmp_path, capsys):
    root, labs = small_dataset(tmp_path, n_subjects=6, per_subject=1)
    out = tmp_path / "ds"
    assert _build(root, labs, out) == 0
    ds = DatasetDir(out)
    first = ds.read_manifest()["fingerprint"]
    assert json.loads((out / FOLDER_MARKER).read_text()) | {"created": 0} == {
        "kind": "dataset", "ecgka_version": ds.read_manifest()["ecgka_version"], "created": 0, "content": first}
    ds.cache_dir.mkdir()
    (ds.cache_dir / "train-stale.npy").write_bytes(b"old")
    capsys.readouterr()
    _one_line_error(capsys, _build(root, labs, out, "pairing.window_after_min=30"),
                    f"holds dataset {first}.*pass --force")
    assert ds.read_manifest()["fingerprint"] == first and (ds.cache_dir / "train-stale.npy").exists()
    assert _build(root, labs, out, "pairing.window_after_min=30", "--force") == 0
    assert f"replaced dataset {first}" in capsys.readouterr().out
    assert ds.read_manifest()["fingerprint"] != first and not ds.cache_dir.exists()
    assert _build(root, labs, out, "pairing.window_after_min=30") == 0  # same fingerprint: skipped
    assert "up to date" in capsys.readouterr().out


def _empty_left(out: Path) -> None:
    ds = DatasetDir(out)
    assert sorted(p.name for p in out.iterdir()) == sorted([FOLDER_MARKER, ds.EXCLUSIONS])
    assert not ds.manifest_path.exists()


def test_build_pairing_nothing_fails_with_the_main_cause(tmp_path, capsys):
    root, labs = small_dataset(tmp_path, n_subjects=6, per_subject=1)
    frame = pd.read_csv(labs)
    frame["valuenum"] = 25.0  # every potassium out of range
    frame.to_csv(labs, index=False)
    err = _one_line_error(capsys, _build(root, labs, tmp_path / "ds"),
                          r"no ECG paired: 6 potassium labs dropped out_of_range \(the exclusion ledger is .*exclusions.csv")
    assert "Traceback" not in err
    _empty_left(tmp_path / "ds")
    ledger = pd.read_csv(DatasetDir(tmp_path / "ds").exclusions_path)
    assert len(ledger) == 6 and set(ledger["reason"]) == {"no_lab_in_window"}


def test_build_with_an_empty_split_fails_and_keeps_the_ledger(tmp_path, capsys):
    root, labs = small_dataset(tmp_path, n_subjects=2, per_subject=1)
    _one_line_error(capsys, _build(root, labs, tmp_path / "ds"), r"split \w+ is empty: 2 ECGs of 2 subjects")
    _empty_left(tmp_path / "ds")
    # the folder is a dataset folder: a build with more inputs may use it without --force
    root2, labs2 = small_dataset(tmp_path / "more", n_subjects=6, per_subject=1)
    assert _build(root2, labs2, tmp_path / "ds") == 0
