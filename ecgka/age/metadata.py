"""Age metadata, ``(age, path)`` rows in a fixed order, from the released sources.

- AgeDB: one row per image in ``AgeDB/``, **sorted by file name** (the released script used directory-
  listing order, which cannot be reproduced); the age is the third ``_`` field of the file name.
- IMDB-WIKI: ``imdb_crop/imdb.mat`` then ``wiki_crop/wiki.mat`` with the released filters.

Preparation rules (``RULES``, ``ecgka age prepare``'s Python API ``prepare_split(..., rules=...)``):

- ``ecgka`` (default; the paper profile): a face score must be a number >= 1 (NaN is dropped), and rows
  older than 120 (the last age of the balanced rule) get no split and are left out of the CSV;
- ``released`` (the released ``imdb-wiki-dir`` script): a row is dropped only when its face score is
  below 1 (``face_score < 1`` is False for NaN, so a NaN score is kept), and ages 121-200 stay in the
  training split (the balanced rule assigns val/test for 0..120 only; every other row is train).
- A CSV with ``age`` and ``path`` columns, in its row order (``--metadata``).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd

from ecgka.errors import InputError
from ecgka.names import NameTable

SOURCES: NameTable = NameTable("age dataset")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
IMDB_WIKI_PARTS = (("imdb_crop", "imdb"), ("wiki_crop", "wiki"))
RULES = ("ecgka", "released")


def frame(ages, paths) -> pd.DataFrame:
    return pd.DataFrame({"age": np.asarray(ages, dtype=np.int64), "path": list(paths)})


@SOURCES.register("agedb")
def agedb_metadata(images: Path) -> pd.DataFrame:
    """``images`` holds ``AgeDB/`` (or is it); files ``<id>_<name>_<age>_<gender>.jpg``, sorted."""
    folder = images / "AgeDB" if (images / "AgeDB").is_dir() else images
    if not folder.is_dir():
        raise InputError(f"{images}: not a folder")
    files = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"{folder}: no .jpg/.png images")
    return frame([_agedb_age(name, folder) for name in files], [f"AgeDB/{name}" for name in files])


def _agedb_age(name: str, folder: Path) -> int:
    fields = Path(name).stem.split("_")
    try:
        return int(fields[2])
    except (IndexError, ValueError):
        raise InputError(f"{folder / name}: file name has no age as its third '_' field") from None


@SOURCES.register("imdb-wiki")
def imdb_wiki_metadata(images: Path, rules: str = "ecgka") -> pd.DataFrame:
    """IMDB rows then WIKI rows, kept by the face-score, second-face and age filters (``rules``: a NaN face
    score is dropped by ``ecgka``, kept by ``released``)."""
    check_rules(rules)
    parts = [_mat_rows(images / folder / f"{name}.mat", name, folder, rules) for folder, name in IMDB_WIKI_PARTS]
    return pd.concat(parts, ignore_index=True)


def check_rules(rules: str) -> str:
    if rules not in RULES:
        raise InputError(f"preparation rules {rules!r}: valid are {', '.join(RULES)}")
    return rules


def face_kept(face_score: np.ndarray, rules: str = "ecgka") -> np.ndarray:
    """Rows whose face score passes: ``>= 1`` (ecgka: NaN fails) or ``not < 1`` (released: NaN passes)."""
    score = np.asarray(face_score, dtype=float)
    return ~(score < 1.0) if rules == "released" else score >= 1.0


def _mat_rows(path: Path, key: str, prefix: str, rules: str = "ecgka") -> pd.DataFrame:
    from scipy.io import loadmat

    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        record = loadmat(path)[key][0, 0]
        fields = {name: np.ravel(record[name][0]) for name in
                  ("full_path", "dob", "photo_taken", "face_score", "second_face_score")}
    except (KeyError, ValueError, IndexError, TypeError) as exc:
        raise InputError(f"{path}: not a {key}.mat metadata file ({exc})") from None
    ages = np.array([_age_or_invalid(d, t) for d, t in zip(fields["dob"], fields["photo_taken"], strict=True)])
    second = fields["second_face_score"].astype(float)
    keep = (face_kept(fields["face_score"], rules) & (np.isnan(second) | (second <= 0))
            & (ages >= 0) & (ages <= 200))
    paths = [f"{prefix}/{np.ravel(p)[0]}" for p in fields["full_path"][keep]]
    return frame(ages[keep], paths)


def age_at_photo(dob: float, photo_year: int) -> int:
    """Photo year - birth year, minus 1 when born in July or later; the birth date is the proleptic
    ordinal ``dob - 366`` clamped to at least 1 (the released rule)."""
    born = dt.date.fromordinal(max(int(dob) - 366, 1))
    return int(photo_year) - born.year - (1 if born.month >= 7 else 0)


def _age_or_invalid(dob: float, photo_year: float) -> int:
    """``age_at_photo``, or -1 (filtered out) for a dob or year that is not a valid date: NaN, or past the
    year 9999 (the released script would stop with a traceback there)."""
    try:
        return age_at_photo(dob, photo_year)
    except (ValueError, OverflowError):
        return -1


def metadata_from_csv(path: Path) -> pd.DataFrame:
    """An existing ``age,path`` table, in its row order (extra columns such as ``split`` are ignored)."""
    table = read_csv(path)
    missing = [c for c in ("age", "path") if c not in table.columns]
    if missing:
        raise InputError(f"{path}: missing columns {', '.join(missing)}")
    ages = pd.to_numeric(table["age"], errors="coerce")
    bad = ages.isna() | (ages != ages.round())
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputError(f"{path}: column age, row {row + 2}: {table['age'].iloc[row]!r} is not an integer age")
    return frame(ages.astype(np.int64), table["path"].astype(str))


def read_csv(path: Path) -> pd.DataFrame:
    if not Path(path).is_file():
        raise InputError(f"{path}: file not found")
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a CSV table ({str(exc).splitlines()[0]})") from None
