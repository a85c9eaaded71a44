"""Subgroups (TRIPOD+AI 14, 23a): eGFR by CKD-EPI 2021, care setting from transfers, subgroup shard columns
with and without the hosp tables, the report section."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from ecgka.catalog import DatasetDir
from ecgka.data.subgroups import (
    UNKNOWN,
    age_band,
    care_setting,
    egfr_ckd_epi_2021,
    egfr_stage,
    nearest_creatinine,
    subgroups_from_tables,
    transfer_settings,
)
from ecgka.keys import SPLITS, SUBGROUP_COLS


def test_egfr_matches_hand_computed_values():
    # F, Scr 0.7 (= k), 50 y: 142 x 1 x 1 x 0.9938^50 x 1.012 = 105.30
    # M, Scr 1.8, 70 y: 142 x (1.8/0.9)^-1.2 x 0.9938^70 = 142 x 0.43528 x 0.64700 = 39.99
    # M, Scr 0.6, 30 y: 142 x (0.6/0.9)^-0.302 x 0.9938^30 = 142 x 1.13026 x 0.82979 = 133.18
    got = egfr_ckd_epi_2021([0.7, 1.8, 0.6, np.nan], [50, 70, 30, 40], [True, False, False, True])
    np.testing.assert_allclose(got[:3], [105.30, 39.99, 133.18], atol=0.02)
    assert np.isnan(got[3])
    assert list(egfr_stage([105.3, 90.0, 89.9, 60, 45, 44.9, 30, 15, 14.9, np.nan])) == [
        ">=90", ">=90", "60-89", "60-89", "45-59", "30-44", "30-44", "15-29", "<15", UNKNOWN]
    assert list(age_band([18, 40, 79, 91, None])) == ["18-39", "40-59", "60-79", ">=80", UNKNOWN]


def _t(s: str) -> float:
    return float(pd.Timestamp(s).value // 10**9)


def test_care_setting_on_a_hand_made_transfers_table():
    transfers = pd.DataFrame({
        "subject_id": [1, 1, 1, 1, 2, 2],
        "hadm_id": ["", "11", "11", "11", "22", "22"],
        "eventtype": ["ED", "admit", "transfer", "discharge", "admit", "discharge"],
        "careunit": ["Emergency Department", "Medicine", "Medical Intensive Care Unit (MICU)", "",
                     "Neuro Surgical Intensive Care Unit (Neuro SICU)", ""],
        "intime": ["2150-01-01 08:00:00", "2150-01-01 12:00:00", "2150-01-02 12:00:00", "2150-01-04 12:00:00",
                   "2150-03-01 00:00:00", "2150-03-02 00:00:00"],
        "outtime": ["2150-01-01 12:00:00", "2150-01-02 12:00:00", "2150-01-04 12:00:00", "",
                    "2150-03-02 00:00:00", ""],
    })
    settings = transfer_settings(transfers)
    assert list(settings["setting"]) == ["ED", "ward", "ICU", "ICU"]  # the discharge rows have no interval
    ecg_sid = [1, 1, 1, 1, 2, 3]
    ecg_t = [_t("2150-01-01 09:00"), _t("2150-01-01 13:00"), _t("2150-01-03 00:00"), _t("2150-01-05 00:00"),
             _t("2150-03-01 06:00"), _t("2150-01-01 09:00")]
    assert list(care_setting(ecg_sid, ecg_t, settings)) == ["ED", "ward", "ICU", "outpatient/other", "ICU",
                                                            "outpatient/other"]


def test_nearest_creatinine_within_a_day_and_age_at_the_ecg():
    creat = pd.DataFrame({"subject_id": [1, 1, 2], "time_s": [_t("2150-01-01 00:00"), _t("2150-01-01 20:00"),
                                                              _t("2150-01-01 00:00")], "scr": [1.0, 2.0, 1.5]})
    got = nearest_creatinine([1, 1, 2], [_t("2150-01-01 15:00"), _t("2150-01-03 00:00"), _t("2150-01-02 01:00")],
                             creat)
    assert got[0] == 2.0 and np.isnan(got[1]) and np.isnan(got[2])
    ecgs = pd.DataFrame({"sample_id": [0, 1, 2], "subject_id": [1, 2, 9],
                         "time_s": [_t("2155-06-01"), _t("2150-01-01 01:00"), _t("2150-01-01")]})
    patients = pd.DataFrame({"subject_id": [1, 2], "sex": ["F", "M"], "anchor_age": [60.0, 89.0],
                             "anchor_year": [2150.0, 2148.0]})
    out = subgroups_from_tables(ecgs, patients, transfer_settings(pd.DataFrame({"subject_id": []})), creat)
    assert list(out["sex"]) == ["F", "M", UNKNOWN]
    assert out["age"].tolist()[:2] == [65, 91] and pd.isna(out["age"][2])  # capped at 91
    # subject 2: 1.5 mg/dL an hour before, M, 91 y: 142 x (1.5/0.9)^-1.2 x 0.9938^91 = 43.68
    assert list(out["egfr_stage"]) == [UNKNOWN, "30-44", UNKNOWN]


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    from ecgka.standin import generate_standin

    out = tmp_path_factory.mktemp("standin") / "mimic"
    generate_standin(out, subjects=150, seed=3, workers=1)
    return out


def _cfg():
    from ecgka.config import apply_overrides
    from ecgka.data.config import BuildConfig

    return BuildConfig.model_validate(apply_overrides({}, [
        "split.per_bin_cap=8", "shards.chunk_records=24", "shards.row_group_rows=64", "shards.part_rows=128"]))


def _subgroup_rows(data_dir: Path) -> pd.DataFrame:
    cols = ["sample_id", "potassium", *(c.value for c in SUBGROUP_COLS)]
    ds = DatasetDir(data_dir)
    return pd.concat([pq.read_table(p, columns=cols).to_pandas() for s in SPLITS for p in ds.shards(s)],
                     ignore_index=True)


def test_standin_writes_patients_and_transfers_with_relations(standin):
    patients = pd.read_csv(standin / "hosp" / "patients.csv.gz")
    assert list(patients.columns) == ["subject_id", "gender", "anchor_age", "anchor_year", "anchor_year_group", "dod"]
    assert set(patients["gender"]) == {"F", "M"} and patients["anchor_age"].between(18, 91).all()
    transfers = pd.read_csv(standin / "hosp" / "transfers.csv.gz")
    assert {"ED", "admit", "discharge"} <= set(transfers["eventtype"])
    assert transfers["transfer_id"].is_unique
    items = pd.read_csv(standin / "hosp" / "d_labitems.csv.gz")
    assert 50912 in set(items["itemid"])


def test_build_with_the_hosp_tables_fills_the_subgroup_columns(standin, tmp_path):
    from ecgka.data.build import build_dataset

    m = build_dataset(standin / "ecg", [standin / "hosp" / "labevents.csv.gz"], tmp_path / "ds", _cfg(),
                      d_labitems=standin / "hosp" / "d_labitems.csv.gz")  # patients/transfers found beside the labs
    assert set(m["inputs"]["subgroups"]) == {"patients", "transfers"}
    rows = _subgroup_rows(tmp_path / "ds")
    assert m["subgroups"]["sex"] == rows["sex"].value_counts().to_dict()
    assert set(rows["sex"]) == {"F", "M"}
    assert rows["age"].notna().all()
    assert {"ED", "ward", "outpatient/other"} <= set(rows["care_setting"])
    assert len(set(rows["egfr_stage"]) - {UNKNOWN}) >= 4
    hyper = rows["potassium"] >= 5.5  # the stand-in's relations: more hyperkalaemia in the ED / ICU and at low eGFR
    acute = rows["care_setting"].isin(["ED", "ICU"]).to_numpy()
    low = rows["egfr_stage"].isin(["<15", "15-29", "30-44"]).to_numpy()
    assert hyper[acute].mean() > hyper[~acute].mean() and hyper[low].mean() > hyper[~low].mean()


def test_build_without_the_hosp_tables_gives_unknown(standin, tmp_path):
    from ecgka.data.build import build_dataset

    labs = tmp_path / "labs" / "labevents.csv.gz"
    labs.parent.mkdir()
    shutil.copy(standin / "hosp" / "labevents.csv.gz", labs)
    m = build_dataset(standin / "ecg", [labs], tmp_path / "ds", _cfg(),
                      d_labitems=standin / "hosp" / "d_labitems.csv.gz")
    assert "subgroups" not in m["inputs"]
    rows = _subgroup_rows(tmp_path / "ds")
    assert len(rows)
    for col in ("sex", "care_setting", "egfr_stage"):
        assert set(rows[col]) == {UNKNOWN}
    assert rows["age"].isna().all()


def test_subgroup_metrics_give_n_cis_too_few_and_flags():
    from ecgka.metrics.subgroups import subgroup_metrics

    rng = np.random.default_rng(0)
    n = 600
    labels = rng.normal(4.3, 0.9, n)
    setting = np.where(np.arange(n) < 300, "ED", np.where(np.arange(n) < 580, "ward", "ICU"))
    noise = np.where(setting == "ward", 0.9, 0.15)  # the ward is much worse
    preds = labels + rng.normal(0, 1, n) * noise
    subjects = np.arange(n) // 2
    out = subgroup_metrics(preds, labels, subjects, labels > 5.5, {"care_setting": setting},
                           {"hypo": 3.5, "hyper": 5.5}, n_boot=200, seed=1)
    rows = {r["level"]: r for r in out["factors"]["care_setting"]}
    assert list(rows) == ["ED", "ICU", "ward"]
    assert rows["ICU"]["too_few"] and "ci" not in rows["ICU"] and rows["ICU"]["n"] == 20
    ed, ward = rows["ED"], rows["ward"]
    assert ed["n"] == 300 and ed["n_subjects"] == 150
    assert ed["events"]["hyper"] == int((labels[:300] >= 5.5).sum())
    assert ed["ci"]["mae"]["lower"] <= ed["metrics"]["mae"] <= ed["ci"]["mae"]["upper"]
    assert "mae" in ward["worse"] and "mae" not in ed["worse"]


def _with_subgroups(df: pd.DataFrame, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = len(df)
    setting = np.array(["ED", "ward", "outpatient/other"], dtype=object)[rng.integers(0, 3, n)]
    setting[:12] = "ICU"  # under the minimum size: "too few"
    return df.assign(sex=np.where(rng.random(n) < 0.5, "F", "M"), age=rng.integers(18, 92, n).astype("int16"),
                     care_setting=setting, egfr_stage=UNKNOWN)


def test_report_section_has_n_cis_and_too_few_rows(tmp_path):
    import json
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from report_factory import fake_manifest, fake_predictions, make_run

    from ecgka.catalog import RunDir
    from ecgka.catalog.info import DatasetInfo
    from ecgka.evaluation import EvalConfig, compute_metrics
    from ecgka.report import write_report

    manifest = fake_manifest(tmp_path / "data")
    run = make_run(tmp_path, "vanilla", manifest, seed=1)
    test = _with_subgroups(fake_predictions(1), 1)
    val = fake_predictions(101)
    metrics = compute_metrics(test, val, DatasetInfo.from_dict(manifest), EvalConfig(n_boot=200))
    block = metrics["subgroups"]
    assert set(block["factors"]) == {"sex", "age_band", "care_setting"}  # eGFR all unknown: left out
    icu = next(r for r in block["factors"]["care_setting"] if r["level"] == "ICU")
    assert icu["too_few"] and icu["n"] == 12 and "ci" not in icu
    path = RunDir(run).metrics_path("test")
    old = json.loads(path.read_text())
    path.write_text(json.dumps({**metrics, "run": old["run"]}))
    html = write_report([run], tmp_path / "out").read_text()
    assert 'id="subgroups"' in html and 'data-name="subgroups"' in html
    table = pd.read_csv(tmp_path / "out" / "tables" / "subgroups.csv")
    assert "too few" in html
    assert {"F", "M", "ICU", "ED"} <= set(table.astype(str).to_numpy().ravel())
    ed_row = html[html.index(">ED<"):]
    assert "(" in ed_row[:400]  # a value with its CI


def test_predictions_of_a_dataset_without_subgroup_columns_read_as_unknown(tmp_path):
    from ecgka.data.subgroups import with_subgroups

    preds = pd.DataFrame({"sample_id": np.array([3, 1], np.int64), "subject_id": [7, 8], "label": [4.0, 5.0],
                          "prediction": [4.1, 4.9]})
    out = with_subgroups(preds, tmp_path / "no-dataset", "test")
    assert list(out["sample_id"]) == [3, 1]
    assert set(out["sex"]) == set(out["care_setting"]) == set(out["egfr_stage"]) == {UNKNOWN}
    assert out["age"].isna().all()


def test_cli_build_takes_patients_and_transfers_options(standin, tmp_path, capsys):
    from ecgka.cli import main

    labs = tmp_path / "labs" / "labevents.csv.gz"
    labs.parent.mkdir()
    shutil.copy(standin / "hosp" / "labevents.csv.gz", labs)
    code = main(["build", "--ecg-root", str(standin / "ecg"), "--labs", str(labs), "--out", str(tmp_path / "cli"),
                 "--patients", str(standin / "hosp" / "patients.csv.gz"), "--quiet", "--workers", "1",
                 "split.per_bin_cap=8", "shards.chunk_records=24", "shards.row_group_rows=64", "shards.part_rows=128"])
    capsys.readouterr()
    assert code == 0
    rows = _subgroup_rows(tmp_path / "cli")
    assert set(rows["sex"]) == {"F", "M"} and set(rows["care_setting"]) == {UNKNOWN}  # no transfers table
    assert len(set(rows["egfr_stage"]) - {UNKNOWN}) >= 3  # creatinine from the labs, sex and age from patients
