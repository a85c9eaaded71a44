"""The pipeline runner: expansion, references, skipping unchanged stages, re-running changed ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from ecgka.catalog import PipelineDir
from ecgka.config import ConfigModel
from ecgka.errors import ConfigError
from ecgka.io import read_json
from ecgka.pipeline import STAGE_KINDS, StageKind, load_pipeline, run_pipeline
from ecgka.pipeline.runner import check_pipeline
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
        ("stages:\n  - id: a\n    kind: copy_text\n    text: ${vars.nope}\n", "variable 'nope' is not declared"),
        ("vars: {x: null}\nstages:\n  - id: a\n    kind: copy_text\n    text: ${vars.x}\n",
         "variable 'x' is not set"),
        ("vars: {x: ''}\nstages:\n  - id: a\n    kind: copy_text\n    text: a${vars.x}\n",
         "variable 'x' is not set"),
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


TWO_STAGES = """
stages:
  - id: a
    kind: copy_text
    text: "{a_text}"
  - id: b
    kind: copy_text
    text: "{b_text}"
"""


@pytest.mark.parametrize(
    ("a_text", "b_text", "message"),
    [
        ("x", "${c}", r"stage 'b': \$\{c\} names no earlier stage"),
        ("x", "${aa}", r"names no earlier stage \(unknown stage 'aa'; did you mean 'a'\?"),
        ("${b}", "x", r"stage 'a': \$\{b\} is a forward reference: stage 'b' comes later"),
        ("${b}", "${a}", r"stage 'a': \$\{b\} is a cycle: a -> b -> a"),
        ("${a}", "x", r"stage 'a': \$\{a\} is a cycle: stage 'a' reads its own output"),
    ],
)
def test_bad_references_are_named_before_any_stage_runs(tmp_path, a_text, b_text, message):
    """An undefined, forward or cyclic reference fails before the first stage runs: nothing is written."""
    spec = load_pipeline(_write(tmp_path / "p.yaml", TWO_STAGES.format(a_text=a_text, b_text=b_text)))
    CALLS.clear()
    with pytest.raises(ConfigError, match=message):
        run_pipeline(spec, tmp_path / "out", tmp_path, log=lambda s: None)
    assert CALLS == [] and not (tmp_path / "out").exists()


def test_a_bad_late_stage_fails_before_the_first_runs(tmp_path):
    """A bad option of the last stage (a train override here) is found before the first stage runs."""
    text = PIPELINE + """  - id: late
    kind: train
    config: {config}
    data: ${first}
    overrides: [batchsize=3]
"""
    config = _write(tmp_path / "t.yaml", "epochs: 1\n")
    spec = load_pipeline(_write(tmp_path / "p.yaml", text.replace("{config}", str(config))))
    CALLS.clear()
    with pytest.raises(ConfigError, match=r"stage 'late': .*batchsize.*: unknown key 'batchsize'; did you mean "
                                          r"'batch_size'\?"):
        run_pipeline(spec, tmp_path / "out", tmp_path, log=lambda s: None)
    assert CALLS == [] and not (tmp_path / "out").exists()


def _build_pipeline(tmp_path: Path, **paths: str) -> Path:
    options = "".join(f"    {k}: {v}\n" for k, v in paths.items())
    return _write(tmp_path / "p.yaml", f"""
vars: {{d_labitems: ""}}
stages:
  - id: dataset
    kind: build
{options}  - id: run
    kind: train
    config: {tmp_path / "t.yaml"}
    data: ${{dataset}}/variants/ir10
""")


@pytest.mark.parametrize("missing", ["ecg_root", "labs", "d_labitems", "config"])
def test_missing_external_inputs_fail_before_any_stage(tmp_path, missing):
    """External inputs must exist up front; an earlier stage's output (${dataset}/...) need not yet."""
    from ecgka.errors import InputError

    _write(tmp_path / "t.yaml", "epochs: 1\n")
    (tmp_path / "ecg").mkdir()
    for name in ("labs.csv", "d.csv", "b.yaml"):
        _write(tmp_path / name, "")
    paths = {"ecg_root": str(tmp_path / "ecg"), "labs": f"[{tmp_path / 'labs.csv'}]",
             "d_labitems": str(tmp_path / "d.csv"), "config": str(tmp_path / "b.yaml")}
    spec = load_pipeline(_build_pipeline(tmp_path, **paths))
    check_pipeline(spec, tmp_path / "out", tmp_path)  # all present: the job checks out
    paths[missing] = paths[missing].replace(str(tmp_path), str(tmp_path / "gone"))
    spec = load_pipeline(_build_pipeline(tmp_path, **paths))
    with pytest.raises(InputError, match=rf"stage 'dataset': {missing}: .*gone.*: not found"):
        run_pipeline(spec, tmp_path / "out", tmp_path, log=lambda s: None)
    assert not (tmp_path / "out").exists()


def test_an_optional_variable_left_empty_unsets_the_option(tmp_path):
    spec = load_pipeline(_build_pipeline(tmp_path, ecg_root="e", labs="[l]", d_labitems="${vars.d_labitems}"))
    from ecgka.pipeline.spec import resolve

    assert resolve(spec.stages[0].options, {}, spec.vars, "stage 'dataset'")["d_labitems"] is None
    spec = load_pipeline(tmp_path / "p.yaml", {"d_labitems": "/x/d_labitems.csv.gz"})
    assert resolve(spec.stages[0].options, {}, spec.vars, "s")["d_labitems"] == "/x/d_labitems.csv.gz"


@pytest.mark.parametrize(
    ("set_vars", "message"),
    [
        ({"nosuchvar": 3}, r"--set nosuchvar: .*p.yaml declares no variable 'nosuchvar' \(declared: greeting\)"),
        ({"greting": "x"}, r"--set greting: .*did you mean 'greeting'\? \(declared: greeting\)"),
    ],
)
def test_set_names_a_declared_variable(tmp_path, set_vars, message):
    with pytest.raises(ConfigError, match=message):
        load_pipeline(_write(tmp_path / "p.yaml", PIPELINE), set_vars)


def test_set_on_a_pipeline_without_vars(tmp_path):
    with pytest.raises(ConfigError, match=r"declares no variable 'x' \(declared: none\)"):
        load_pipeline(_write(tmp_path / "p.yaml", "stages:\n  - id: a\n    kind: copy_text\n    text: t\n"),
                      {"x": 1})


def test_yaml_error_names_file_line_and_column(tmp_path):
    path = _write(tmp_path / "p.yaml", "stages:\n  - id: a\n    kind: [copy_text\n")
    with pytest.raises(ConfigError, match=r"p.yaml: line \d+, column \d+: not valid YAML \(.+\)$"):
        load_pipeline(path)


def test_pipeline_folder_is_claimed(tmp_path):
    """OUT is a pipeline folder: a file or a foreign folder is refused before anything runs; another
    pipeline's folder is replaced only with force."""
    from ecgka.catalog import FolderKind, folder_kind
    from ecgka.errors import InputError

    spec = load_pipeline(_write(tmp_path / "p.yaml", PIPELINE))
    _write(tmp_path / "file", "x")
    (tmp_path / "foreign").mkdir()
    _write(tmp_path / "foreign" / "precious.txt", "mine")
    CALLS.clear()
    for out, message in ((tmp_path / "file", "is a file"), (tmp_path / "foreign", "not written by ecgka")):
        with pytest.raises(InputError, match=message):
            run_pipeline(spec, out, tmp_path, log=lambda s: None)
    assert CALLS == [] and (tmp_path / "foreign" / "precious.txt").read_text() == "mine"
    assert sorted(p.name for p in (tmp_path / "foreign").iterdir()) == ["precious.txt"]

    out = tmp_path / "out"
    run_pipeline(spec, out, tmp_path, log=lambda s: None)
    assert folder_kind(out) is FolderKind.PIPELINE
    other = load_pipeline(_write(tmp_path / "q.yaml", PIPELINE.replace("name: t", "name: other")))
    with pytest.raises(InputError, match="holds pipeline 't'.*--force"):
        run_pipeline(other, out, tmp_path, log=lambda s: None)
    lines: list[str] = []
    run_pipeline(other, out, tmp_path, force=True, log=lines.append)
    assert any("replaced the outputs of pipeline 't'" in line for line in lines)


# ---- fingerprints: content and location, never the spelling of a path or the working directory -------------


class ReadOptions(ConfigModel):
    input: str
    config: str | None = None
    tag: str = ""


def _run_read(o: ReadOptions, out: Path) -> None:
    """A stage with an external input file and a config file (both path options)."""
    CALLS.append(out.name)
    out.mkdir(parents=True, exist_ok=True)
    (out / "out.txt").write_text(Path(o.input).read_text() + (Path(o.config).read_text() if o.config else ""))


if "read_file" not in STAGE_KINDS:
    STAGE_KINDS.register("read_file")(
        StageKind(ReadOptions, _run_read, lambda o, out: (out / "out.txt").exists(), path_options=("input", "config"),
                  config_options=("config",), input_options=("input", "config"),
                  result=lambda o, out: f"{len((out / 'out.txt').read_text())} characters")
    )

LOCATED = """
name: located
vars: {data: null, cfg: null}
stages:
  - id: read
    kind: read_file
    input: ${vars.data}
    config: ${vars.cfg}
    tag: "${vars.data}"
  - id: copy
    kind: copy_text
    text: "!"
    source: ${read}
  - id: again
    kind: copy_text
    text: "?"
    source: "${copy}/../copy"
"""


def _located(project: Path, data: str, cfg: str):
    return load_pipeline(project / "p.yaml", {"data": data, "cfg": cfg})


def test_rerun_skips_whatever_the_spelling_the_working_directory_or_the_folder_place(tmp_path, monkeypatch):
    """Relative and absolute --out alternating, another working directory (inputs spelled from there), and
    the whole pipeline folder moved: every stage is skipped. A changed input re-runs its stage and those
    downstream; a changed config file (not its place) likewise."""
    project = tmp_path / "project"
    project.mkdir()
    _write(project / "p.yaml", LOCATED)
    _write(project / "data.txt", "data")
    _write(project / "cfg.txt", "cfg")
    monkeypatch.chdir(project)
    CALLS.clear()
    lines: list[str] = []
    run_pipeline(_located(project, "data.txt", "cfg.txt"), Path("out"), project, log=lines.append)
    assert CALLS == ["read", "copy", "again"] and "[done] read in" in lines[1] and lines[1].endswith(": 7 characters")
    runs = [(project, Path("out"), "data.txt", "cfg.txt"),
            (project, project / "out", str(project / "data.txt"), "./cfg.txt"),
            (project, Path("out/"), "./data.txt", str(project / "cfg.txt")),
            (tmp_path, Path("project/out"), "project/data.txt", "project/cfg.txt"),
            (project / "out", Path("."), "../data.txt", "../cfg.txt")]
    for cwd, out, data, cfg in runs:
        monkeypatch.chdir(cwd)
        CALLS.clear()
        results = run_pipeline(_located(project, data, cfg), out, project, log=lambda s: None)
        assert CALLS == [] and [r.status for r in results] == ["skipped"] * 3, (cwd, out)

    moved = tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    (project / "out").rename(moved)
    monkeypatch.chdir(tmp_path)
    CALLS.clear()
    run_pipeline(_located(project, "project/data.txt", "project/cfg.txt"), Path("elsewhere/moved"), project,
                 log=lambda s: None)
    assert CALLS == []
    assert read_json(PipelineDir(moved).marker("copy"))["output"] == "copy"  # relative to the pipeline folder

    # the config file moved, same content: unchanged; an edited config or input: that stage and downstream
    (project / "cfg.txt").rename(project / "cfg2.txt")
    run_pipeline(_located(project, "project/data.txt", "project/cfg2.txt"), moved, project, log=lambda s: None)
    assert CALLS == []
    _write(project / "cfg2.txt", "cfg, edited")
    run_pipeline(_located(project, "project/data.txt", "project/cfg2.txt"), moved, project, log=lambda s: None)
    assert CALLS == ["read", "copy", "again"]
    CALLS.clear()
    _write(project / "data.txt", "new data")
    run_pipeline(_located(project, "project/data.txt", "project/cfg2.txt"), moved, project, log=lambda s: None)
    assert CALLS == ["read", "copy", "again"] and (moved / "again" / "out.txt").read_text() == "new datacfg, edited!?"


def test_an_external_input_is_identified_by_its_resolved_location(tmp_path, monkeypatch):
    """Another file with the same content at another place is another input (the docs: location + content)."""
    project = tmp_path / "project"
    project.mkdir()
    _write(project / "p.yaml", LOCATED)
    _write(project / "data.txt", "data")
    _write(project / "copy.txt", "data")
    _write(project / "cfg.txt", "cfg")
    monkeypatch.chdir(project)
    run_pipeline(_located(project, "data.txt", "cfg.txt"), project / "out", project, log=lambda s: None)
    CALLS.clear()
    run_pipeline(_located(project, "copy.txt", "cfg.txt"), project / "out", project, log=lambda s: None)
    assert CALLS == ["read", "copy", "again"]
