"""Subgroup facts of each paired ECG (TRIPOD+AI 14, 23a): sex, age at the ECG, care setting, eGFR stage.

Sources (MIMIC-IV hosp module, PhysioNet names; ``docs/build.md``, "Subgroups"): ``patients.csv.gz`` (sex, age),
``transfers.csv.gz`` (care setting) and creatinine (itemid 50912) rows of the lab exports. Each table is
optional: a missing table, subject or value gives ``"unknown"`` (age: null), never an error. Big tables are
streamed in chunks, only the needed columns, only the subjects of the record list.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

UNKNOWN = "unknown"
CREATININE_ITEMID = 50912
CREATININE_WINDOW_S = 24 * 3600
AGE_CAP = 91
SEXES = ("F", "M")
CARE_SETTINGS = ("ED", "ICU", "ward", "outpatient/other")
EGFR_STAGES = (">=90", "60-89", "45-59", "30-44", "15-29", "<15")
AGE_BANDS = ("18-39", "40-59", "60-79", ">=80")
ICU_MARKS = ("intensive care unit", "(micu)", "(sicu)", "(cvicu)", "(ccu)", "(tsicu)")
CHUNK_ROWS = 1_000_000
SUBGROUP_COLUMNS = ("sex", "age", "care_setting", "egfr_stage")


def egfr_ckd_epi_2021(scr, age, female) -> np.ndarray:
    """eGFR (mL/min/1.73 m2), race-free CKD-EPI 2021: 142 x min(Scr/k,1)^a x max(Scr/k,1)^-1.200 x 0.9938^age
    x 1.012 [female]; k 0.7 (F) / 0.9 (M), a -0.241 (F) / -0.302 (M); Scr mg/dL. NaN where an input is missing."""
    scr = np.asarray(scr, np.float64)
    age = np.asarray(age, np.float64)
    female = np.asarray(female, bool)
    k = np.where(female, 0.7, 0.9)
    a = np.where(female, -0.241, -0.302)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = scr / k
        out = 142.0 * np.minimum(ratio, 1.0) ** a * np.maximum(ratio, 1.0) ** -1.200 * 0.9938 ** age
    out = out * np.where(female, 1.012, 1.0)
    return np.where((scr > 0) & np.isfinite(scr) & np.isfinite(age), out, np.nan)


def egfr_stage(egfr) -> np.ndarray:
    """Stage labels by eGFR: >=90, 60-89, 45-59, 30-44, 15-29, <15; ``unknown`` for NaN."""
    egfr = np.asarray(egfr, np.float64)
    edges = np.array([90.0, 60.0, 45.0, 30.0, 15.0])
    labels = np.array(EGFR_STAGES + (UNKNOWN,), dtype=object)
    idx = np.full(len(egfr), len(EGFR_STAGES) - 1)
    for i, edge in reversed(list(enumerate(edges))):
        idx = np.where(egfr >= edge, np.minimum(idx, i), idx)
    idx = np.where(np.isfinite(egfr), idx, len(EGFR_STAGES))
    return labels[idx]


def age_band(age) -> np.ndarray:
    """Age bands of the report: 18-39, 40-59, 60-79, >=80 (``unknown`` for a missing age)."""
    age = pd.to_numeric(pd.Series(age, dtype="object"), errors="coerce").to_numpy(np.float64)
    out = np.full(len(age), UNKNOWN, dtype=object)
    out[age < 40] = AGE_BANDS[0]
    out[(age >= 40) & (age < 60)] = AGE_BANDS[1]
    out[(age >= 60) & (age < 80)] = AGE_BANDS[2]
    out[age >= 80] = AGE_BANDS[3]
    return out


def _seconds(values: pd.Series) -> np.ndarray:
    """Naive times as float seconds since 1970 (NaN where unparsable or empty)."""
    t = pd.to_datetime(values.replace("", None), errors="coerce")
    out = t.to_numpy("datetime64[s]").astype(np.int64).astype(np.float64)
    out[t.isna().to_numpy()] = np.nan
    return out


def _chunks(path: Path, columns: list[str]) -> Iterator[pd.DataFrame]:
    """``path`` (CSV, optionally gzipped, or Parquet) in chunks of the ``columns`` present, as strings."""
    if path.suffix == ".parquet":
        pf = pq.ParquetFile(path)
        cols = [c for c in columns if c in pf.schema_arrow.names]
        for batch in pf.iter_batches(batch_size=CHUNK_ROWS, columns=cols):
            yield batch.to_pandas().astype(str).replace({"None": "", "nan": "", "NaT": ""})
        return
    yield from pd.read_csv(path, usecols=lambda c: c in columns, dtype=str, keep_default_na=False,
                           chunksize=CHUNK_ROWS)


def _usable(path: Path | None) -> bool:
    return path is not None and Path(path).is_file() and Path(path).stat().st_size > 0


def _subjects(df: pd.DataFrame, subjects: set[int]) -> pd.DataFrame:
    sid = pd.to_numeric(df.get("subject_id", pd.Series(dtype=str)), errors="coerce")
    keep = sid.isin(subjects).to_numpy()
    out = df[keep].copy()
    out["subject_id"] = sid[keep].astype(np.int64).to_numpy()
    return out


def read_patients(path: Path | None, subjects: set[int]) -> pd.DataFrame:
    """``subject_id, sex, anchor_age, anchor_year`` of the subjects (empty when the table is missing)."""
    empty = pd.DataFrame({"subject_id": pd.Series(dtype=np.int64), "sex": pd.Series(dtype=object),
                          "anchor_age": pd.Series(dtype=np.float64), "anchor_year": pd.Series(dtype=np.float64)})
    if not _usable(path):
        return empty
    parts = [_subjects(c, subjects) for c in _chunks(Path(path), ["subject_id", "gender", "anchor_age", "anchor_year"])]
    df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if df.empty:
        return empty
    sex = df.get("gender", pd.Series("", index=df.index)).str.strip().str.upper()
    return pd.DataFrame({
        "subject_id": df["subject_id"].to_numpy(np.int64),
        "sex": np.where(sex.isin(SEXES), sex, UNKNOWN).astype(object),
        "anchor_age": pd.to_numeric(df.get("anchor_age"), errors="coerce").to_numpy(np.float64),
        "anchor_year": pd.to_numeric(df.get("anchor_year"), errors="coerce").to_numpy(np.float64),
    }).drop_duplicates("subject_id", keep="first")


def read_transfers(path: Path | None, subjects: set[int]) -> pd.DataFrame:
    """``subject_id, setting, intime_s, outtime_s``: one row per interval with a setting (ED, ICU, ward)."""
    cols = ["subject_id", "hadm_id", "eventtype", "careunit", "intime", "outtime"]
    empty = pd.DataFrame({"subject_id": pd.Series(dtype=np.int64), "setting": pd.Series(dtype=object),
                          "intime_s": pd.Series(dtype=np.float64), "outtime_s": pd.Series(dtype=np.float64)})
    if not _usable(path):
        return empty
    parts = [_subjects(c, subjects) for c in _chunks(Path(path), cols)]
    df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if df.empty:
        return empty
    return transfer_settings(df)


def transfer_settings(df: pd.DataFrame) -> pd.DataFrame:
    """The care setting of each transfers row (``docs/build.md``): ``eventtype`` ED -> ED; a careunit naming an
    intensive care unit -> ICU; any other interval with a ``hadm_id`` -> ward; rows without an interval dropped."""
    get = lambda c: df[c].astype(str).fillna("") if c in df else pd.Series("", index=df.index)  # noqa: E731
    event = get("eventtype").str.strip().str.upper()
    unit = get("careunit").str.strip().str.lower()
    hadm = get("hadm_id").str.strip().replace({"nan": "", "None": ""})
    icu = unit.apply(lambda u: any(m in u for m in ICU_MARKS) or ("neuro" in u and "icu" in u))
    setting = np.where(event == "ED", "ED", np.where(icu, "ICU", np.where(hadm != "", "ward", "")))
    out = pd.DataFrame({"subject_id": df["subject_id"].to_numpy(np.int64), "setting": setting.astype(object),
                        "intime_s": _seconds(get("intime")), "outtime_s": _seconds(get("outtime"))})
    ok = (out["setting"] != "") & np.isfinite(out["intime_s"]) & np.isfinite(out["outtime_s"])
    return out[ok.to_numpy()].reset_index(drop=True)


def care_setting(subject_id, time_s, settings: pd.DataFrame) -> np.ndarray:
    """The setting of each ECG time: ED over ICU over ward when intervals overlap; outside every interval
    ``outpatient/other``."""
    ecg = pd.DataFrame({"subject_id": np.asarray(subject_id, np.int64), "t": np.asarray(time_s, np.float64),
                        "pos": np.arange(len(subject_id))})
    rank = {name: i for i, name in enumerate(CARE_SETTINGS)}
    best = np.full(len(ecg), len(CARE_SETTINGS) - 1)
    if len(settings) and len(ecg):
        m = ecg.merge(settings, on="subject_id")
        inside = (m["intime_s"] <= m["t"]) & (m["t"] < m["outtime_s"])
        m = m[inside.to_numpy()]
        if len(m):
            r = m["setting"].map(rank).to_numpy()
            lowest = pd.Series(r).groupby(m["pos"].to_numpy()).min()
            best[lowest.index.to_numpy()] = np.minimum(best[lowest.index.to_numpy()], lowest.to_numpy())
    return np.array(CARE_SETTINGS, dtype=object)[best]


def read_creatinine(lab_files: list[Path], subjects: set[int]) -> pd.DataFrame:
    """``subject_id, time_s, scr`` (mg/dL) of itemid 50912 in labevents-format exports (other files: none)."""
    parts = []
    for path in lab_files:
        if not _usable(path):
            continue
        for chunk in _chunks(Path(path), ["subject_id", "itemid", "charttime", "valuenum"]):
            if "itemid" not in chunk or "valuenum" not in chunk or "charttime" not in chunk:
                break
            item = pd.to_numeric(chunk["itemid"], errors="coerce")
            chunk = _subjects(chunk[(item == CREATININE_ITEMID).to_numpy()], subjects)
            if chunk.empty:
                continue
            parts.append(pd.DataFrame({"subject_id": chunk["subject_id"].to_numpy(np.int64),
                                       "time_s": _seconds(chunk["charttime"]),
                                       "scr": pd.to_numeric(chunk["valuenum"], errors="coerce").to_numpy(np.float64)}))
    if not parts:
        return pd.DataFrame({"subject_id": pd.Series(dtype=np.int64), "time_s": pd.Series(dtype=np.float64),
                             "scr": pd.Series(dtype=np.float64)})
    out = pd.concat(parts, ignore_index=True)
    return out[np.isfinite(out["time_s"]) & np.isfinite(out["scr"]) & (out["scr"] > 0)].reset_index(drop=True)


def nearest_creatinine(subject_id, time_s, creat: pd.DataFrame, window_s: int = CREATININE_WINDOW_S) -> np.ndarray:
    """The creatinine nearest in time to each ECG within ``window_s`` (NaN when none)."""
    n = len(subject_id)
    out = np.full(n, np.nan)
    if not len(creat) or not n:
        return out
    ecg = pd.DataFrame({"subject_id": np.asarray(subject_id, np.int64), "t": np.asarray(time_s, np.float64),
                        "pos": np.arange(n)}).sort_values("t", kind="stable")
    labs = creat.rename(columns={"time_s": "t"})[["subject_id", "t", "scr"]].sort_values(["t", "scr"], kind="stable")
    m = pd.merge_asof(ecg, labs, on="t", by="subject_id", direction="nearest", tolerance=float(window_s))
    out[m["pos"].to_numpy()] = m["scr"].to_numpy(np.float64)
    return out


@dataclass(frozen=True)
class SubgroupSources:
    """The optional tables a build reads subgroups from (None: not given and not found)."""

    patients: Path | None = None
    transfers: Path | None = None

    @classmethod
    def find(cls, lab_files: list[Path], patients: Path | None = None, transfers: Path | None = None
             ) -> SubgroupSources:
        """The given tables, else ``patients.csv.gz`` / ``transfers.csv.gz`` beside the first lab file (its
        ``hosp/`` folder) when present."""
        folder = Path(lab_files[0]).parent if lab_files else None
        def pick(given, name):
            if given is not None:
                return Path(given)
            found = folder / name if folder is not None else None
            return found if found is not None and found.is_file() else None
        return cls(pick(patients, "patients.csv.gz"), pick(transfers, "transfers.csv.gz"))


def subgroup_frame(ecgs: pd.DataFrame, sources: SubgroupSources, lab_files: list[Path]) -> pd.DataFrame:
    """``sample_id`` + :data:`SUBGROUP_COLUMNS` for ``ecgs`` (``sample_id, subject_id, time_s``)."""
    subjects = set(ecgs["subject_id"].astype(np.int64).tolist())
    settings = read_transfers(sources.transfers, subjects) if _usable(sources.transfers) else None
    return subgroups_from_tables(ecgs, read_patients(sources.patients, subjects), settings,
                                 read_creatinine(lab_files, subjects))


def subgroups_from_tables(ecgs: pd.DataFrame, patients: pd.DataFrame, settings: pd.DataFrame | None,
                          creat: pd.DataFrame) -> pd.DataFrame:
    """The subgroup columns of ``ecgs``; ``settings`` None (no transfers table): every care setting unknown."""
    sid = ecgs["subject_id"].to_numpy(np.int64)
    t = ecgs["time_s"].to_numpy(np.float64)
    pat = pd.DataFrame({"subject_id": sid}).merge(patients, on="subject_id", how="left")
    sex = pat["sex"].fillna(UNKNOWN).to_numpy(object)
    year = pd.to_datetime(t, unit="s").year.to_numpy(np.float64)
    age = np.minimum(pat["anchor_age"].to_numpy(np.float64) + year - pat["anchor_year"].to_numpy(np.float64), AGE_CAP)
    scr = nearest_creatinine(sid, t, creat)
    known = np.isin(sex, SEXES)
    egfr = np.where(known, egfr_ckd_epi_2021(scr, age, sex == "F"), np.nan)
    return pd.DataFrame({
        "sample_id": ecgs["sample_id"].to_numpy(np.int64), "sex": sex,
        "age": pd.array(np.where(np.isfinite(age), np.round(age), np.nan), dtype="Int16"),
        "care_setting": (care_setting(sid, t, settings) if settings is not None
                         else np.full(len(sid), UNKNOWN, dtype=object)), "egfr_stage": egfr_stage(egfr),
    })


def with_subgroups(df: pd.DataFrame, data_dir: Path, split: str) -> pd.DataFrame:
    """Predictions ``df`` (``sample_id``) with the subgroup columns of the split's shards; a dataset without them
    (built before they existed, or another kind of dataset) gives ``unknown`` / null."""
    from ecgka.catalog import DatasetDir
    from ecgka.errors import EcgkaError

    cols = list(SUBGROUP_COLUMNS)
    found = pd.DataFrame({"sample_id": pd.Series(dtype=np.int64), **{c: pd.Series(dtype=object) for c in cols}})
    try:
        parts = []
        for path in DatasetDir(data_dir).shards(split):
            names = pq.ParquetFile(path).schema_arrow.names
            if all(c in names for c in cols):
                parts.append(pq.read_table(path, columns=["sample_id", *cols]).to_pandas())
        if parts:
            found = pd.concat(parts, ignore_index=True).astype({"sample_id": np.int64})
    except (OSError, ValueError, KeyError, EcgkaError):  # not an ECG dataset (an age split, ...): unknown
        pass
    out = df.drop(columns=[c for c in cols if c in df.columns]).merge(found, on="sample_id", how="left")
    for c in ("sex", "care_setting", "egfr_stage"):
        out[c] = out[c].fillna(UNKNOWN).astype(str)
    out["age"] = pd.to_numeric(out["age"], errors="coerce").astype("Int16")
    return out
