"""The shipped age pipelines: the smoke chain end to end (synth-age -> vanilla -> Dist Loss -> evaluate ->
report) through ``ecgka run``; the paper grids validate with a user's split CSV and image root."""

from __future__ import annotations

from pathlib import Path

import pytest
from age_factory import ecgka

from ecgka.catalog import ReportDir, RunDir

pytestmark = pytest.mark.slow  # end to end: `make test` runs it, `make test-fast` skips it


def test_age_smoke_pipeline_end_to_end_then_skips(tmp_path):
    out = tmp_path / "age_smoke"
    first = ecgka("run", "pipelines/age_smoke.yaml", "--out", out, "--set", "n=150")
    assert first.returncode == 0, first.stderr[-2000:]
    assert "6 stage(s) ran" in first.stdout
    assert ReportDir(out / "report").html.is_file()
    for run in ("vanilla", "dist_loss"):
        info = RunDir(out / run).read_run()
        assert info["status"] == "complete" and info["dataset_kind"] == "age-csv"
        assert RunDir(out / run).read_metrics("test")["clinical"] is None
    assert RunDir(out / "dist_loss").read_run()["init"] == str(out / "vanilla")
    assert "mmol/L" not in Path(ReportDir(out / "report").markdown).read_text()
    second = ecgka("run", "pipelines/age_smoke.yaml", "--out", out, "--set", "n=150")
    assert second.returncode == 0 and "0 stage(s) ran, 6 skipped" in second.stdout


@pytest.mark.parametrize("name", ["agedb_dir_paper", "imdb_wiki_dir_paper"])
def test_paper_age_pipelines_check_with_a_users_paths(name, tmp_path):
    (tmp_path / "split.csv").write_text("age,path,split\n")
    done = ecgka("run", f"pipelines/{name}.yaml", "--check", "--out", tmp_path / "out",
                 "--set", f"csv={tmp_path / 'split.csv'}", f"image_root={tmp_path}")
    assert done.returncode == 0, done.stderr
    assert "31 stages resolve and validate" in done.stdout
    assert not (tmp_path / "out").exists()


def test_paper_age_pipeline_needs_the_split_csv(tmp_path):
    done = ecgka("run", "pipelines/agedb_dir_paper.yaml", "--check", "--out", tmp_path / "out")
    assert done.returncode == 2 and "csv" in done.stderr and "Traceback" not in done.stderr
