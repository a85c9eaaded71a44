"""Age preparation: the balanced split rule, AgeDB and IMDB-WIKI metadata, the shipped AgeDB-DIR split."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.io import savemat

from ecgka.age.dataset import open_age_split
from ecgka.age.metadata import age_at_photo, imdb_wiki_metadata
from ecgka.age.prepare import prepare_split
from ecgka.age.split import balanced_split
from ecgka.age.table import read_split_table
from ecgka.cli import main
from ecgka.errors import InputError
from ecgka.labels import LabelGrid


@pytest.fixture(scope="module")
def agedb_csv(shared_dir: Path) -> Path:
    path = shared_dir / "data" / "agedb-dir" / "agedb.csv"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


def test_rule_reproduces_shipped_split(agedb_csv):
    table = pd.read_csv(agedb_csv)
    assert balanced_split(table["age"].tolist(), cap=30) == table["split"].tolist()


def test_prepare_from_metadata_is_byte_identical(agedb_csv, tmp_path):
    out = tmp_path / "new.csv"
    assert main(["age", "prepare", "agedb", "--metadata", str(agedb_csv), "--out", str(out)]) == 0
    assert out.read_bytes() == agedb_csv.read_bytes()


def test_loader_counts_and_test_shot_groups(agedb_csv, tmp_path):
    splits = {s: open_age_split(agedb_csv, tmp_path, s, check=False) for s in ("train", "val", "test")}
    assert {s: len(d) for s, d in splits.items()} == {"train": 12208, "val": 2140, "test": 2140}
    grid = LabelGrid.preset("age")
    groups = grid.assign_groups(splits["test"].labels, grid.counts(splits["train"].labels))
    assert {g: int((groups == g).sum()) for g in ("many", "median", "few")} == {
        "many": 1530, "median": 448, "few": 162}


def test_agedb_from_folder_sorted_with_age_from_name(tmp_path):
    folder = tmp_path / "AgeDB"
    folder.mkdir()
    names = ["3_B_40_m.jpg", "1_A_7_f.jpg", "2_C_40_f.jpg", "10_D_7_m.jpg"] * 1
    for name in names:
        (folder / name).write_bytes(b"")
    out = tmp_path / "agedb.csv"
    summary = prepare_split("agedb", out, images=tmp_path)
    table = pd.read_csv(out)
    assert table["path"].tolist() == [f"AgeDB/{n}" for n in sorted(names)]
    assert table["age"].tolist() == [7, 7, 40, 40]
    assert summary["train"] == 4  # fewer than 3 per age: nothing for val/test


def test_agedb_name_without_age_is_one_line(tmp_path):
    (tmp_path / "AgeDB").mkdir()
    (tmp_path / "AgeDB" / "x_y.jpg").write_bytes(b"")
    with pytest.raises(InputError, match="third '_' field"):
        prepare_split("agedb", tmp_path / "o.csv", images=tmp_path)


def _matlab_day(date: dt.date) -> float:
    return float(date.toordinal() + 366)


def _write_mat(path: Path, key: str, rows: list[tuple]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    full_path = np.empty((1, len(rows)), dtype=object)
    for k, row in enumerate(rows):
        full_path[0, k] = np.array([row[0]])
    fields = {"full_path": full_path,
              "dob": np.array([[r[1] for r in rows]], dtype=float),
              "photo_taken": np.array([[r[2] for r in rows]], dtype=np.uint16),
              "face_score": np.array([[r[3] for r in rows]], dtype=float),
              "second_face_score": np.array([[r[4] for r in rows]], dtype=float)}
    savemat(path, {key: fields})


def test_imdb_wiki_rules(tmp_path):
    june, july = _matlab_day(dt.date(1970, 6, 30)), _matlab_day(dt.date(1970, 7, 1))
    nan, inf = float("nan"), float("inf")
    _write_mat(tmp_path / "imdb_crop" / "imdb.mat", "imdb", [
        ("01/a.jpg", june, 2000, 2.0, nan),    # 30
        ("01/b.jpg", july, 2000, 2.0, nan),    # July or later: 29
        ("01/c.jpg", june, 2000, 0.5, nan),    # face score < 1: out
        ("01/d.jpg", june, 2000, 2.0, 0.3),    # second face: out
        ("01/e.jpg", june, 2000, 2.0, 0.0),    # second score 0: kept, 30
        ("01/f.jpg", june, 2050, -inf, nan),   # no face: out
        ("01/g.jpg", nan, 2000, 2.0, nan),     # no birth date: out
        ("01/h.jpg", 1e9, 2000, 2.0, nan),     # past year 9999: out
    ])
    _write_mat(tmp_path / "wiki_crop" / "wiki.mat", "wiki", [
        ("02/g.jpg", june, 1960, 1.0, nan),    # age -10: out
        ("02/h.jpg", 10.0, 1, 3.0, nan),       # ordinal < 1 -> 0001-01-01: age 0
        ("02/i.jpg", june, 2010, 1.5, nan),    # 40
    ])
    table = imdb_wiki_metadata(tmp_path)
    assert table["path"].tolist() == ["imdb_crop/01/a.jpg", "imdb_crop/01/b.jpg", "imdb_crop/01/e.jpg",
                                      "wiki_crop/02/h.jpg", "wiki_crop/02/i.jpg"]
    assert table["age"].tolist() == [30, 29, 30, 0, 40]
    assert age_at_photo(_matlab_day(dt.date(1999, 12, 31)), 2000) == 0
    out = tmp_path / "imdb_wiki.csv"
    assert main(["age", "prepare", "imdb-wiki", "--images", str(tmp_path), "--out", str(out)]) == 0
    assert pd.read_csv(out)["split"].tolist() == ["train"] * 5


def test_imdb_wiki_cap_is_150():
    ages = [50] * 1000
    splits = balanced_split(ages, cap=150)
    assert splits.count("val") == splits.count("test") == 150


def test_split_csv_missing_columns_named(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("age,file\n3,a.jpg\n")
    with pytest.raises(InputError, match=r"bad.csv: missing columns path, split"):
        read_split_table(bad)
    assert main(["age", "prepare", "agedb", "--metadata", str(tmp_path / "none.csv"), "--out",
                 str(tmp_path / "o.csv")]) == 2


def test_split_csv_bad_value_named(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("age,path,split\n3,a.jpg,train\nold,b.jpg,test\n")
    with pytest.raises(InputError, match=r"column age, row 3: 'old'"):
        read_split_table(bad)


def test_age_writers_claim_their_folder(tmp_path):
    """``ecgka age synth`` and ``ecgka age pack`` write a folder marker of their own kind; a non-empty
    foreign folder is refused with one line and left as it was."""
    from ecgka.age.shards import pack_age_shards
    from ecgka.age.standin import CSV_NAME, generate_age_standin
    from ecgka.catalog import FolderKind, folder_kind

    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("x")
    for write in (lambda: generate_age_standin(foreign, n=40, size=8),
                  lambda: pack_age_shards(tmp_path / "x.csv", tmp_path, foreign)):
        with pytest.raises(InputError, match="not written by ecgka") as info:
            write()
        assert len(str(info.value).splitlines()) == 1
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]

    standin = tmp_path / "standin"
    generate_age_standin(standin, n=40, size=8)
    assert folder_kind(standin) is FolderKind.AGE_STANDIN
    generate_age_standin(standin, n=40, size=8)  # same kind, same content: written again
    with pytest.raises(InputError, match="--force"):
        generate_age_standin(standin, n=40, size=8, seed=1)
    generate_age_standin(standin, n=40, size=8, seed=1, force=True)

    packed = tmp_path / "packed"
    pack_age_shards(standin / CSV_NAME, standin, packed)
    assert folder_kind(packed) is FolderKind.AGE_IMAGES
    with pytest.raises(InputError, match="is an ecgka age-images folder"):
        generate_age_standin(packed, n=40, size=8)


def test_age_cli_passes_force_through(tmp_path, capsys):
    from ecgka.cli import main

    out = tmp_path / "standin"
    assert main(["age", "synth", "--out", str(out), "--n", "40", "--size", "8"]) == 0
    assert main(["age", "synth", "--out", str(out), "--n", "40", "--size", "8", "--seed", "1"]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["age", "synth", "--out", str(out), "--n", "40", "--size", "8", "--seed", "1", "--force"]) == 0
    packed = tmp_path / "packed"
    csv = next(out.glob("*.csv"))
    assert main(["age", "pack", "--csv", str(csv), "--images", str(out), "--out", str(packed)]) == 0
    other = tmp_path / "other.csv"
    other.write_text("".join(csv.read_text().splitlines(keepends=True)[:-1]))
    assert main(["age", "pack", "--csv", str(other), "--images", str(out), "--out", str(packed)]) == 2
    assert main(["age", "pack", "--csv", str(other), "--images", str(out), "--out", str(packed), "--force"]) == 0
