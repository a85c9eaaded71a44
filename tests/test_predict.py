"""``ecgka predict``: a folder of ECGs with bad records among them, through the build's reader and QC."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from standin_factory import built_standin, trained_and_evaluated

from ecgka.catalog import DatasetDir
from ecgka.training import predict

pytestmark = pytest.mark.slow  # end to end: `make test` runs it, `make test-fast` skips it

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    ecg, data = built_standin(tmp_path_factory.mktemp("predict"))
    return ecg, data, trained_and_evaluated(data, data.parent / "run")


def test_predict_matches_ecgka_and_excludes_bad_records(trained, tmp_path):
    ecg_root, data, run = trained
    records = pd.read_csv(ecg_root / "record_list.csv")
    test_ids = pd.read_parquet(DatasetDir(data).split_dir("test"), columns=["sample_id", "study_id"])
    chosen = records[records["study_id"].isin(test_ids["study_id"])].head(4)
    bad = chosen.iloc[0]
    dat = ecg_root / f"{bad['path']}.dat"
    dat.write_bytes(dat.read_bytes()[:1000])  # a truncated record among good ones
    extra = pd.DataFrame({"subject_id": [1, 2], "study_id": [3, 4], "path": ["files/p0/missing/0", "../escape/0"]})
    listing = pd.concat([chosen[["subject_id", "study_id", "path"]], extra], ignore_index=True)
    listing.to_csv(tmp_path / "list.csv", index=False)
    out = tmp_path / "scores.parquet"
    result = subprocess.run([sys.executable, "-m", "ecgka", "predict", "--model", str(run), "--ecg-root", str(ecg_root),
                             "--record-list", str(tmp_path / "list.csv"), "--out", str(out)],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    k = len(chosen)  # the test split's first records: one truncated, the others good
    assert k >= 3
    assert f"scored {k - 1} ECG(s), excluded 3" in result.stdout
    table = pd.read_parquet(out)
    assert len(table) == k + 2 and table["excluded_reason"].iloc[0] is not None
    assert table["excluded_reason"].iloc[0] == "truncated" and table["excluded_reason"].iloc[k] == "file_missing"
    assert table["excluded_reason"].iloc[k + 1] == "unsafe_path"
    assert table["potassium_pred"].iloc[[0, k, k + 1]].isna().all()
    assert table["dataset_digest"].nunique() == 1 and table["model_version"].isna().all()
    # the good records get ecgka's own test predictions (same reader, QC, cleaning, float16, z-score)
    want = predict(run, data, "test").merge(test_ids, on="sample_id").set_index("study_id")["prediction"]
    good = table.iloc[1:k]
    np.testing.assert_allclose(good["potassium_pred"].to_numpy(), want.loc[good["study_id"]].to_numpy(), atol=1e-5)


def test_predict_with_the_registry_champion(trained, tmp_path):
    from ecgka.release.promote import promote
    from ecgka.release.registry import ModelRegistry
    from ecgka.release.scoring import predict_ecgs

    ecg_root, data, run = trained
    ModelRegistry(tmp_path / "registry").register(run)
    assert promote(tmp_path / "registry", "v1", new_registry=True)["promote"]  # the first version: no champion yet
    by_run = predict_ecgs(str(run), ecg_root, tmp_path / "a.parquet")
    by_alias = predict_ecgs(f"{tmp_path / 'registry'}@champion", ecg_root, tmp_path / "b.parquet")
    assert (by_alias["model_version"] == "v0001").all()  # scored by the registry's TorchScript export
    np.testing.assert_allclose(by_alias["potassium_pred"], by_run["potassium_pred"], atol=1e-5)
    pd.testing.assert_series_equal(by_alias["excluded_reason"], by_run["excluded_reason"])


def _predict_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ecgka", "predict", *args], cwd=REPO, capture_output=True, text=True)


def test_predict_out_and_batch_size_are_checked_before_scoring(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    common = ["--model", str(tmp_path / "no-model"), "--ecg-root", str(tmp_path)]
    out = _predict_cli(*common, "--out", str(notes))
    assert out.returncode == 2 and "exists; pass --force" in out.stderr and notes.read_text() == "my notes"
    out = _predict_cli(*common, "--out", str(tmp_path))
    assert out.returncode == 2 and "is a folder" in out.stderr
    out = _predict_cli(*common, "--out", str(tmp_path / "s.parquet"), "--batch-size", "0")
    assert out.returncode == 2 and "--batch-size 0: must be an integer >= 1" in out.stderr


def test_duplicate_rows_are_scored_once_and_an_existing_file_needs_force(trained, tmp_path):
    ecg_root, data, run = trained
    records = pd.read_csv(ecg_root / "record_list.csv").head(3)[["subject_id", "study_id", "path"]]
    pd.concat([records, records.iloc[[0, 0]]], ignore_index=True).to_csv(tmp_path / "list.csv", index=False)
    out = tmp_path / "scores.parquet"
    args = ["--model", str(run), "--ecg-root", str(ecg_root), "--record-list", str(tmp_path / "list.csv"),
            "--out", str(out)]
    first = _predict_cli(*args)
    assert first.returncode == 0, first.stderr
    assert "2 duplicate record row(s) scored once" in first.stdout and len(pd.read_parquet(out)) == 3
    assert _predict_cli(*args).returncode == 2  # exists
    assert _predict_cli(*args, "--force").returncode == 0
