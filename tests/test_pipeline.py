"""The pipeline runner: expansion, references, skipping unchanged stages, re-running changed ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from ecgka.catalog import PipelineDir
from ecgka.config import ConfigModel
from ecgka.errors import ConfigError
from ecgka.io import read_json
from ecgka.pipeline import STAGE_KINDS, StageKind, load_pipeline, run_pipeline
from ecgka.pipeline.spec import expand_foreach, references

CALLS: list[str] = []


class CopyOptions(ConfigModel):
    text: str
    source: str | None = None


def _run_copy(o: CopyOptions, out: Path) -> None:
    """A real (tiny) stage: writes its text, appended to the upstream stage's output if any."""
    CALLS.append(out.name)
    out.mkdir(parents=True, exist_ok=True)
    upstream = (Path(o.source) / "out.txt").read_text() if o.source else ""
    (out / "out.txt").write_text(upstream + o.text)


if "copy_text" not in STAGE_KINDS:
    STAGE_KINDS.register("copy_text")(
        StageKind(CopyOptions, _run_copy, lambda o, out: (out / "out.txt").exists())
    )


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


PIPELINE = """
name: t
vars: {greeting: hello}
stages:
  - id: first
    kind: copy_text
    text: "${vars.greeting}"
  - id: "second_{n}"
    kind: copy_text
    foreach: {n: [a, b]}
    text: "-{n}"
    source: "${first}"
"""


def test_foreach_and_references():
    stages = expand_foreach({"id": "{m}_{b}", "kind": "train", "foreach": {"m": ["x", "y"], "b": [1, 2]}})
    assert [s["id"] for s in stages] == ["x_1", "x_2", "y_1", "y_2"]
    assert references({"a": ["${one}/f", "${vars.two}"], "b": 3}) == {"one", "vars.two"}


def test_runs_then_skips_then_reruns_downstream_of_a_change(tmp_path):
    spec = load_pipeline(_write(tmp_path / "p.yaml", PIPELINE))
    out = tmp_path / "out"
    CALLS.clear()
    results = run_pipeline(spec, out, tmp_path, log=lambda s: None)
    assert [r.status for r in results] == ["ran"] * 3
    assert (out / "second_b" / "out.txt").read_text() == "hello-b"
    summary = read_json(PipelineDir(out).summary)
    assert [(s["id"], s["status"]) for s in summary["stages"]] == [("first", "ran"), ("second_a", "ran"),
                                                                   ("second_b", "ran")]
    CALLS.clear()
    assert all(r.status == "skipped" for r in run_pipeline(spec, out, tmp_path, log=lambda s: None))
    assert CALLS == []
    # a changed variable changes 'first' and so everything reading it
    spec2 = load_pipeline(tmp_path / "p.yaml", {"greeting": "hi"})
    CALLS.clear()
    run_pipeline(spec2, out, tmp_path, log=lambda s: None)
    assert CALLS == ["first", "second_a", "second_b"]
    assert (out / "second_a" / "out.txt").read_text() == "hi-a"


def test_interrupted_stage_runs_again(tmp_path):
    spec = load_pipeline(_write(tmp_path / "p.yaml", PIPELINE))
    out = tmp_path / "out"
    run_pipeline(spec, out, tmp_path, log=lambda s: None)
    PipelineDir(out).marker("second_a").unlink()  # as if killed before the stage finished
    CALLS.clear()
    run_pipeline(spec, out, tmp_path, log=lambda s: None)
    assert CALLS == ["second_a"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("stages:\n  - id: a\n    kind: trian\n", "did you mean 'train'"),
        ("stages:\n  - id: a\n    kind: copy_text\n    text: ${vars.nope}\n", "variable 'nope' is not set"),
        ("stages:\n  - id: a\n    kind: copy_text\n    text: ${b}\n", "names no earlier stage"),
        ("stages:\n  - id: a\n    kind: copy_text\n    txt: x\n", "text"),
        ("stages: []\n", "non-empty list"),
    ],
)
def test_bad_pipelines_fail_with_one_line(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        spec = load_pipeline(_write(tmp_path / "p.yaml", text))
        run_pipeline(spec, tmp_path / "out", tmp_path, log=lambda s: None)


def test_builtin_stages_judge_completeness_through_the_catalog(tmp_path):
    """Each kind's output is complete exactly when the catalog's files say so (an old layout is not)."""
    from ecgka.catalog import DATASET_SCHEMA_VERSION, DatasetDir, ReportDir, RunDir
    from ecgka.io import atomic_write_json
    from ecgka.standin import ECG_DIR, RECORD_LIST

    def complete(kind: str, options: dict, out: Path) -> bool:
        stage = STAGE_KINDS.get(kind)
        return stage.is_complete(stage.options_model(**options), out)

    dataset, run, report, standin = (DatasetDir(tmp_path / "d"), RunDir(tmp_path / "r"),
                                     ReportDir(tmp_path / "rep"), tmp_path / "s")
    build = {"ecg_root": "e", "labs": ["l"]}
    dataset.path.mkdir()
    atomic_write_json(dataset.manifest_path, {"schema_version": DATASET_SCHEMA_VERSION - 1})
    dataset.exclusions_path.write_text("row\n")
    assert not complete("build", build, dataset.path)  # an old layout is rebuilt
    atomic_write_json(dataset.manifest_path, {"schema_version": DATASET_SCHEMA_VERSION})
    assert complete("build", build, dataset.path)
    dataset.exclusions_path.unlink()
    assert not complete("build", build, dataset.path)

    train = {"config": "c", "data": str(dataset.path)}
    assert not complete("train", train, run.path)
    run.path.mkdir()
    for status, done in (("running", False), ("complete", True)):
        atomic_write_json(run.run_json, {"status": status})
        assert complete("train", train, run.path) is done

    evaluate = {"run": str(run.path), "data": str(dataset.path), "split": "val"}
    output = STAGE_KINDS.get("evaluate").output_of(STAGE_KINDS.get("evaluate").options_model(**evaluate), tmp_path)
    assert output == run.eval_dir("val") and not complete("evaluate", evaluate, output)
    output.mkdir(parents=True)
    atomic_write_json(run.metrics_path("val"), {})
    assert complete("evaluate", evaluate, output)

    assert not complete("report", {"runs": [str(run.path)]}, report.path)
    report.path.mkdir()
    report.html.write_text("<html></html>")
    assert complete("report", {"runs": [str(run.path)]}, report.path)

    assert not complete("synth", {}, standin)
    (standin / ECG_DIR).mkdir(parents=True)
    (standin / ECG_DIR / RECORD_LIST).write_text("subject_id\n")
    assert complete("synth", {}, standin)
