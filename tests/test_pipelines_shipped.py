"""The shipped pipelines: the smoke chain runs end to end through the CLI; every pipeline validates."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from ecgka.catalog import DatasetDir, PipelineDir, ReportDir, RunDir

pytestmark = pytest.mark.slow  # end to end: `make test` runs it, `make test-fast` skips it

REPO = Path(__file__).resolve().parents[1]


def _ecgka(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ecgka", *args], cwd=cwd, capture_output=True, text=True)


@pytest.mark.slow
def test_smoke_pipeline_end_to_end_then_skips(tmp_path):
    out = tmp_path / "smoke"
    first = _ecgka("run", "pipelines/smoke.yaml", "--out", str(out))
    assert first.returncode == 0, first.stderr[-2000:]
    assert "7 stage(s) ran" in first.stdout
    report = ReportDir(out / "report").html
    assert report.is_file() and f"report: {report}" in first.stdout
    counts = DatasetDir(out / "dataset").read_manifest()["counts"]
    assert counts["record_list"] == counts["train"] + counts["val"] + counts["test"] + counts["excluded"]
    for run in ("vanilla", "dist_loss"):
        assert RunDir(out / run).read_metrics("test")["split"] == "test"
        assert RunDir(out / run).read_run()["status"] == "complete"
    assert RunDir(out / "dist_loss").read_run()["init"] == str(out / "vanilla")
    # each stage's key result as it ends: counts, the best val epoch, the few-shot MAE, the report
    assert re.search(r"\[done\] dataset in [\d.]+ s: train \d+, val \d+, test \d+, excluded \d+ \(of \d+ records\)",
                     first.stdout), first.stdout
    assert re.search(r"\[done\] vanilla in [\d.]+ s: best epoch 1/1: val balanced_mae \d+\.\d{4}", first.stdout)
    assert re.search(r"\[done\] eval_dist_loss in [\d.]+ s: test: few-shot MAE \d+\.\d{4} \(n=\d+\)", first.stdout)
    assert "[done] report in" in first.stdout and f": report: {report}" in first.stdout
    # re-runs skip everything, however --out is spelled, wherever the command starts, wherever the folder is
    pipeline = str(REPO / "pipelines" / "smoke.yaml")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for args, cwd in ((["--out", str(out)], REPO), (["--out", "smoke"], tmp_path), (["--out", str(out)], REPO),
                      (["--out", "./smoke/"], tmp_path), (["--out", "../smoke"], elsewhere)):
        again = _ecgka("run", pipeline, *args, cwd=cwd)
        assert again.returncode == 0 and "0 stage(s) ran, 7 skipped" in again.stdout, (args, cwd, again.stdout)
    moved = tmp_path / "moved" / "smoke"
    moved.parent.mkdir()
    out.rename(moved)
    again = _ecgka("run", "pipelines/smoke.yaml", "--out", str(moved))
    assert again.returncode == 0 and "0 stage(s) ran, 7 skipped" in again.stdout, again.stdout


@pytest.mark.parametrize("name", sorted(p.stem for p in (REPO / "pipelines").glob("*.yaml")))
def test_every_shipped_pipeline_resolves(name, tmp_path):
    """Every stage of every pipeline resolves, and every config (with its overrides) validates."""
    args = ["run", f"pipelines/{name}.yaml", "--check", "--out", str(tmp_path / "out")]
    if name == "ecg_ka_dir_paper":
        args += ["--set", *_mimic_stand_ins(tmp_path)]
    if name == "retrain":  # a user's registry, MIMIC root and new export
        args += ["--set", *_mimic_stand_ins(tmp_path), f"registry={tmp_path / 'registry'}", "new_registry=true"]
    if name in ("agedb_dir_paper", "imdb_wiki_dir_paper"):  # a user's split CSV and image root
        (tmp_path / "split.csv").write_text("age,path,split\n")
        args += ["--set", f"csv={tmp_path / 'split.csv'}", f"image_root={tmp_path}"]
    result = _ecgka(*args)
    assert result.returncode == 0, result.stderr
    assert "stages resolve and validate" in result.stdout
    assert not (tmp_path / "out").exists()  # --check writes nothing


def _mimic_stand_ins(tmp_path: Path, d_labitems: bool = False) -> list[str]:
    """Empty files where the MIMIC inputs would be: --check needs them to exist, not to be read."""
    (tmp_path / "mimic-ecg").mkdir()
    (tmp_path / "labevents.csv.gz").write_bytes(b"")
    values = [f"ecg_root={tmp_path / 'mimic-ecg'}", f"labs={tmp_path / 'labevents.csv.gz'}"]
    return values + [f"d_labitems={tmp_path / 'd_labitems.csv.gz'}"] if d_labitems else values


def test_paper_pipeline_checks_its_inputs_before_anything(tmp_path):
    """The optional d_labitems, once set, must exist; the message names the stage and the option."""
    args = ["--set", *_mimic_stand_ins(tmp_path, d_labitems=True), "pipelines/ecg_ka_dir_paper.yaml"]
    result = _ecgka("run", *args, "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0
    assert "stage 'dataset': d_labitems: " in result.stderr and "d_labitems.csv.gz: not found" in result.stderr
    assert not (tmp_path / "out").exists()
    (tmp_path / "d_labitems.csv.gz").write_bytes(b"")
    result = _ecgka("run", *args, "--check", "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr


def test_paper_pipeline_needs_the_mimic_paths(tmp_path):
    result = _ecgka("run", "pipelines/ecg_ka_dir_paper.yaml", "--check", "--out", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "variable 'ecg_root' is not set" in result.stderr


@pytest.mark.slow
def test_killed_pipeline_resumes_without_redoing_finished_stages(tmp_path):
    """SIGKILL the smoke job once its dataset is built; the re-run skips what finished and completes."""
    import os
    import signal
    import time

    out = tmp_path / "smoke"
    proc = subprocess.Popen([sys.executable, "-m", "ecgka", "run", "pipelines/smoke.yaml", "--out", str(out)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    marker = PipelineDir(out).marker("dataset")
    deadline = time.monotonic() + 300
    while not _finished(marker) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # a marker is written when its stage starts (pending); it holds a fingerprint once done
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    report = ReportDir(out / "report").html
    assert marker.exists() and not report.exists()
    resumed = _ecgka("run", "pipelines/smoke.yaml", "--out", str(out))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "[skip] standin" in resumed.stdout and "[skip] dataset" in resumed.stdout
    assert "[run ] report" in resumed.stdout and report.is_file()


def _finished(marker: Path) -> bool:
    import json

    try:
        return bool(json.loads(marker.read_text()).get("fingerprint"))
    except (OSError, ValueError):
        return False
