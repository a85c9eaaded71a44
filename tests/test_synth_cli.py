"""``ecgka synth`` from the command line: determinism (bytes), summary table, bad input, no half-written output."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import ecgka.standin.generator as generator
from ecgka.catalog import FOLDER_MARKER, FolderKind, claim_folder
from ecgka.cli import main
from ecgka.standin import generate_standin


def tree_digest(root: Path) -> str:
    """SHA-256 over every file's relative path and bytes (mtimes and the folder marker's date ignored)."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != FOLDER_MARKER:
            h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes_whatever_the_workers(tmp_path):
    a = generate_standin(tmp_path / "a", subjects=24, seed=5, workers=1)
    b = generate_standin(tmp_path / "b", subjects=24, seed=5, workers=2)
    generate_standin(tmp_path / "c", subjects=24, seed=6, workers=2)
    assert a["records"] == b["records"] > 0
    assert tree_digest(tmp_path / "a") == tree_digest(tmp_path / "b")
    assert tree_digest(tmp_path / "a") != tree_digest(tmp_path / "c")
    assert {p.name for p in tmp_path.iterdir()} == {"a", "b", "c"}  # no temporary leftovers


def test_cli_writes_into_an_empty_folder_and_prints_a_summary(tmp_path, capsys):
    out = tmp_path / "empty"
    out.mkdir()
    assert main(["synth", "--out", str(out), "--subjects", "3", "--seed", "1", "--workers", "1"]) == 0
    text = capsys.readouterr().out
    assert "ECG records" in text and "potassium labs" in text and str(out) in text
    assert (out / "ecg" / "record_list.csv").is_file() and (out / "hosp" / "labevents.csv.gz").is_file()


def _error(capsys, argv) -> str:
    code = main(["synth", *argv])
    err = capsys.readouterr().err
    assert code == 2, err
    # not on a terminal, progress lines ("ECG records: 10% ...") may come first; the error is one last line
    lines = [line for line in err.splitlines() if not line.startswith("ECG records: ")]
    assert len(lines) == 1 and lines[0].startswith("ecgka synth: error: ") and "Traceback" not in err
    return lines[0] + "\n"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--subjects", "-3"], "--subjects"),
        (["--subjects", "0"], "--subjects"),
        (["--workers", "0"], "--workers"),
        (["--workers", "-1"], "--workers"),
        (["--workers", "100000"], "--workers"),
        (["--seed", "-1"], "--seed"),
    ],
)
def test_bad_counts_are_one_line_errors(tmp_path, capsys, argv, message):
    err = _error(capsys, ["--out", str(tmp_path / "x"), *argv])
    assert message in err
    assert list(tmp_path.iterdir()) == []


def test_non_empty_output_folder_is_refused_and_untouched(tmp_path, capsys):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert "not empty" in _error(capsys, ["--out", str(out), "--subjects", "2"])
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"


def test_output_under_a_file_is_refused(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert "is a file" in _error(capsys, ["--out", str(blocker / "out"), "--subjects", "2"])
    assert [p.name for p in tmp_path.iterdir()] == ["file"]


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can write anywhere")
def test_non_writable_parent_is_refused(tmp_path, capsys):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        assert "not writable" in _error(capsys, ["--out", str(parent / "out"), "--subjects", "2"])
    finally:
        parent.chmod(0o700)


NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def _closed_to_others(path: Path) -> Path | None:
    """The first folder above ``path`` that other users cannot enter (no o+x), or None."""
    for folder in [*reversed(Path(path).resolve().parents)]:
        if not folder.stat().st_mode & 0o001:
            return folder
    return None


def _package_copy_for_nobody(base: Path) -> Path:
    """The ``ecgka`` package source copied into ``base`` (readable by all): the run does not depend on where
    the checkout lies (a clone under a mode-700 folder such as /root is not reachable by 'nobody')."""
    import ecgka

    src = base / "src"
    shutil.copytree(Path(ecgka.__file__).parent, src / "ecgka", ignore=shutil.ignore_patterns("__pycache__"))
    for p in [src, *src.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return src


@pytest.mark.skipif(not (hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("setpriv")),
                    reason="needs root and setpriv to drop to an unprivileged user")
def test_non_writable_parent_is_refused_for_an_unprivileged_user():
    """As root (CI), run the command as user 'nobody', for whom the folder is really not writable."""
    base = Path(tempfile.mkdtemp())
    try:
        base.chmod(0o755)
        if _closed_to_others(base) is not None:
            pytest.skip(f"the temporary folder {base} lies under {_closed_to_others(base)}, closed to other users")
        src = _package_copy_for_nobody(base)
        env = {**os.environ, "PYTHONPATH": str(src), "PYTHONDONTWRITEBYTECODE": "1"}
        probe = subprocess.run([*NOBODY, sys.executable, "-c", "import ecgka, numpy, pandas, pyarrow, pydantic; "
                                "print(ecgka.__file__)"], capture_output=True, text=True, cwd=base, env=env)
        if probe.returncode != 0:  # only the interpreter or its site-packages can be out of reach now
            closed = _closed_to_others(Path(sys.prefix)) or _closed_to_others(Path(sys.executable))
            pytest.skip(f"user 'nobody' cannot run {sys.executable} with its site-packages ({sys.prefix}"
                        f"{f' lies under {closed}, mode 700' if closed else ''}): "
                        f"{(probe.stderr.strip().splitlines() or ['?'])[-1]}")
        assert probe.stdout.strip() == str(src / "ecgka" / "__init__.py")  # the copy, not the checkout
        parent = base / "ro"
        parent.mkdir(mode=0o555)
        cmd = [*NOBODY, sys.executable, "-m", "ecgka", "synth", "--out", str(parent / "out"), "--subjects", "2"]
        result = subprocess.run(cmd, capture_output=True, text=True, cwd=base, env=env)
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().count("\n") == 0 and "not writable" in result.stderr
        assert list(parent.iterdir()) == []
    finally:
        shutil.rmtree(base)


def test_failure_midway_leaves_nothing_behind(tmp_path, monkeypatch, capsys):
    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(generator, "_write_csv", disk_full)  # fails after records and labs are written
    assert "No space left" in _error(capsys, ["--out", str(tmp_path / "out"), "--subjects", "2", "--workers", "1"])
    assert list(tmp_path.iterdir()) == []


def test_failure_in_the_ecg_stage_stops_the_lab_writer_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    def broken_disk(*args, **kwargs):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(generator, "_synth_chunk", broken_disk)  # lab thread is running meanwhile
    assert "Input/output error" in _error(capsys, ["--out", str(tmp_path / "o"), "--subjects", "40", "--workers", "1"])
    assert list(tmp_path.iterdir()) == []


def test_non_integer_argument_is_rejected_by_the_parser(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["synth", "--out", str(tmp_path / "x"), "--subjects", "many"])
    assert exc.value.code == 2 and "expected an integer" in capsys.readouterr().err


def test_a_stand_in_is_replaced_only_with_force(tmp_path, capsys):
    out = tmp_path / "standin"
    assert main(["synth", "--out", str(out), "--subjects", "4", "--workers", "1"]) == 0
    marker = json.loads((out / FOLDER_MARKER).read_text())
    assert (marker["kind"], marker["content"]) == ("stand-in", "subjects=4 seed=0")
    before = tree_digest(out)
    capsys.readouterr()
    assert "holds a stand-in already; pass --force" in _error(capsys, ["--out", str(out), "--subjects", "5"])
    assert tree_digest(out) == before
    assert main(["synth", "--out", str(out), "--subjects", "5", "--workers", "1", "--force"]) == 0
    assert json.loads((out / FOLDER_MARKER).read_text())["content"] == "subjects=5 seed=0"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["standin"]  # no temporary leftovers


@pytest.mark.parametrize(("kind", "message"), [
    (FolderKind.DATASET, "is an ecgka dataset folder, not a stand-in folder"),
    (FolderKind.REPORT, "is an ecgka report folder, not a stand-in folder"),
])
def test_another_ecgka_folder_is_refused_even_with_force(tmp_path, capsys, kind, message):
    out = tmp_path / "other"
    claim_folder(out, kind).write_marker("theirs")
    assert message in _error(capsys, ["--out", str(out), "--subjects", "2", "--force"])
    assert [p.name for p in out.iterdir()] == [FOLDER_MARKER]


def test_a_folder_without_a_marker_is_not_adopted(tmp_path, capsys):
    out = tmp_path / "other"
    out.mkdir()
    (out / "manifest.json").write_text("{}")
    assert "was not written by ecgka" in _error(capsys, ["--out", str(out), "--subjects", "2", "--force"])
    assert [p.name for p in out.iterdir()] == ["manifest.json"]
