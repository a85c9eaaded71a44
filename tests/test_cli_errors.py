"""Bad command lines give one line on stderr, no traceback, the right exit code, and leave nothing behind.

Table-driven: each case names its command line (with ``{tmp}`` for a scratch folder prepared by
``_inputs``), the exit code, a regex of the one-line message and the paths that must not exist after it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from shard_factory import write_dataset

REPO = Path(__file__).resolve().parents[1]

PIPELINE = """
name: t
vars: {greeting: hello, extra: ""}
stages:
  - id: first
    kind: synth
    subjects: 4
  - id: second
    kind: build
    ecg_root: ${first}/ecg
    labs: ["${first}/hosp/labevents.csv.gz"]
"""


def _inputs(tmp: Path) -> None:
    """The files the cases point at: pipelines (good, bad YAML, forward reference, missing input), a record
    list with a bad byte."""
    (tmp / "p.yaml").write_text(PIPELINE)
    (tmp / "badyaml.yaml").write_text("stages:\n  - id: a\n    kind: [synth\n")
    (tmp / "indent.yaml").write_text("stages:\n  - id: a\n   kind: synth\n")
    (tmp / "forward.yaml").write_text(PIPELINE.replace("${first}/ecg", "${third}/ecg")
                                      + "  - id: third\n    kind: synth\n")
    (tmp / "missing.yaml").write_text(PIPELINE.replace("${first}/ecg", str(tmp / "no_such_root")))
    (tmp / "ecg").mkdir()
    (tmp / "ecg" / "record_list.csv").write_bytes(
        b"subject_id,study_id,ecg_time,path\n1,2,2180-01-01 00:00:00,files/a\n3,4,2180-01-01 00:00:00,files/\xffb\n")
    (tmp / "ecg_ok").mkdir()
    (tmp / "ecg_ok" / "record_list.csv").write_text("subject_id,study_id,ecg_time,path\n")
    (tmp / "labevents.csv").write_text("subject_id,itemid,charttime,valuenum\n")
    (tmp / "precious").mkdir()
    (tmp / "precious" / "notes.txt").write_text("mine")
    (tmp / "afile").write_text("mine")
    write_dataset(tmp / "ds", n_train=64, n_val=16, n_test=16, n_samples=64)
    (tmp / "dup.yaml").write_text("epochs: 1\nseed: 3\nepochs: 5\n")
    (tmp / "evaluated" / "eval" / "test").mkdir(parents=True)  # a run evaluated on test only
    (tmp / "evaluated" / "run.json").write_text("{}")
    (tmp / "evaluated" / "eval" / "test" / "metrics.json").write_text("{}")


TRAIN = "train --data {tmp}/ds --out {tmp}/run model.preset=tiny batch_size=32"
BUILD = "build --ecg-root {tmp}/ecg --labs {tmp}/labevents.csv --out {tmp}/out"
CASES = [
    # (id, command line, exit code, message regex, paths that must not exist afterwards)
    ("set_unknown_variable", "run {tmp}/p.yaml --set nosuchvar=3 --out {tmp}/out", 2,
     r"--set nosuchvar: .*p\.yaml declares no variable 'nosuchvar' \(declared: greeting, extra\)", ["out"]),
    ("set_typo_variable", "run --set greting=hi {tmp}/p.yaml --out {tmp}/out", 2,
     r"--set greting: .*did you mean 'greeting'\?", ["out"]),
    ("set_two_files", "run --set greeting=hi {tmp}/p.yaml {tmp}/p.yaml --out {tmp}/out", 2,
     r"--set .*p\.yaml: expected NAME=VALUE \(the pipeline file is already .*p\.yaml\)", ["out"]),
    ("no_pipeline_file", "run --set greeting=hi --out {tmp}/out", 2, r"no pipeline file given", ["out"]),
    ("yaml_error", "run {tmp}/badyaml.yaml --out {tmp}/out", 2,
     r"badyaml\.yaml: line 4, column 1: not valid YAML \(expected ',' or '\]', but got '<stream end>'; "
     r"while parsing a flow sequence started at line 3, column 11\)$", ["out"]),
    ("yaml_error_indent", "run {tmp}/indent.yaml --out {tmp}/out", 2,
     r"indent\.yaml: line 3, column 4: not valid YAML \(expected <block end>, but found '<block mapping start>'; "
     r"while parsing a block collection started at line 2, column 3\)$", ["out"]),
    ("forward_reference", "run {tmp}/forward.yaml --out {tmp}/out", 2,
     r"stage 'second': \$\{third\} is a forward reference: stage 'third' comes later", ["out"]),
    ("missing_input", "run {tmp}/missing.yaml --out {tmp}/out", 2,
     r"stage 'second': ecg_root: .*no_such_root: not found", ["out"]),
    ("missing_input_check", "run {tmp}/missing.yaml --check --out {tmp}/out", 2,
     r"stage 'second': ecg_root: .*no_such_root: not found", ["out"]),
    ("record_list_bad_byte", "build --ecg-root {tmp}/ecg --labs {tmp}/labevents.csv --out {tmp}/out", 2,
     r"record_list\.csv: line 3, column 31: byte 0xff is not valid UTF-8", []),
    ("build_override_unknown_key",
     "build --ecg-root {tmp}/ecg --labs {tmp}/labevents.csv --out {tmp}/out per_bin_cap=60", 2,
     r"^ecgka build: error: command line: per_bin_cap=60: unknown key 'per_bin_cap'; "
     r"did you mean 'split\.per_bin_cap'\?$", ["out"]),
    ("build_override_bad_value",
     "build --ecg-root {tmp}/ecg --labs {tmp}/labevents.csv --out {tmp}/out split.per_bin_cap=abc", 2,
     r"^ecgka build: error: command line: split\.per_bin_cap=abc: ", ["out"]),
    # output folders: never write into a file, a foreign folder or a folder of another kind
    ("build_out_is_a_file", "build --ecg-root {tmp}/ecg --labs {tmp}/labevents.csv --out {tmp}/afile", 2,
     r"afile: is a file, not a folder", []),
    ("build_out_is_foreign", "build --ecg-root {tmp}/ecg --labs {tmp}/labevents.csv --out {tmp}/precious", 2,
     r"not written by ecgka \(it holds 'notes\.txt'\)", []),
    ("report_out_is_foreign", "report {tmp}/ds --out {tmp}/precious", 2,
     r"precious: folder is not empty and was not written by ecgka", []),
    ("report_out_is_a_file", "report {tmp}/ds --out {tmp}/afile", 2, r"afile: is a file, not a folder", []),
    ("train_out_is_the_dataset", "train --data {tmp}/ds --out {tmp}/ds model.preset=tiny batch_size=32", 2,
     r"is an ecgka dataset folder, not a run folder", []),
    ("train_out_is_foreign", "train --data {tmp}/ds --out {tmp}/precious model.preset=tiny batch_size=32", 2,
     r"not empty and was not written by ecgka", []),
    ("train_out_is_a_file", "train --data {tmp}/ds --out {tmp}/afile model.preset=tiny batch_size=32", 2,
     r"is a file, not a folder", []),
    ("synth_out_is_foreign", "synth --out {tmp}/precious --subjects 2", 2, r"precious", []),
    # training values are validated before anything is written
    ("train_negative_lr", TRAIN + " optim.lr=-0.1", 2, r"command line: optim\.lr=-0\.1: .*greater than 0", ["run"]),
    ("train_zero_gamma", TRAIN + " optim.gamma=0", 2, r"optim\.gamma=0: .*greater than 0", ["run"]),
    ("train_milestones_order", TRAIN + " optim.milestones=[8,5]", 2, r"milestones must be strictly increasing",
     ["run"]),
    ("train_milestone_never_fires", TRAIN + " optim.milestones=[5,12]", 2,
     r"\[12\] at or after epochs=10 would never lower lr", ["run"]),
    ("train_unknown_key", TRAIN + " batchsize=3", 2,
     r"command line: batchsize=3: unknown key 'batchsize'; did you mean 'batch_size'\?", ["run"]),
    ("train_nested_key", TRAIN + " lr=0.1", 2, r"command line: lr=0\.1: unknown key 'lr'; did you mean 'optim\.lr'\?",
     ["run"]),
    ("train_bad_value", TRAIN + " epochs=abc", 2, r"command line: epochs=abc: ", ["run"]),
    ("train_batch_too_large", TRAIN + " batch_size=128", 2, r"64 samples, fewer than one batch of 128", ["run"]),
    ("evaluate_not_a_run", "evaluate {tmp}/precious --data {tmp}/ds", 2, r"precious", []),
    # values that were accepted, or failed late or with a misleading cause (issue 19, section 5)
    ("build_bad_regex", BUILD + " labs.hemolysis_pattern=[", 2,
     r"command line: labs\.hemolysis_pattern=\[: not a valid regular expression", ["out"]),
    ("build_negative_workers", BUILD + " --workers -1", 2, r"--workers: Input should be greater than or equal to 1",
     ["out"]),
    ("build_labs_dev_null", "build --ecg-root {tmp}/ecg_ok --labs /dev/null --out {tmp}/out", 2,
     r"^ecgka build: error: /dev/null: is empty", ["out"]),
    ("build_per_bin_cap_zero", BUILD + " split.per_bin_cap=0", 2,
     r"command line: split\.per_bin_cap=0: Input should be greater than or equal to 1", ["out"]),
    ("synth_zero_subjects", "synth --out {tmp}/out --subjects 0", 2, r"--subjects: .*greater than or equal to 1",
     ["out"]),
    ("train_model_dropout", TRAIN + " model.overrides.dropout=2", 2,
     r"command line: model\.overrides\.dropout=2: (model\.overrides: )?dropout: Input should be less than 1", ["run"]),
    ("train_model_kernel_size", TRAIN + " model.overrides.kernel_size=0", 2,
     r"model\.overrides\.kernel_size=0: (model\.overrides: )?kernel_size: .*greater than or equal to 1", ["run"]),
    ("train_model_unknown_option", TRAIN + " model.overrides.kernal_size=3", 2,
     r"kernal_size: net1d has no option 'kernal_size'", ["run"]),
    ("train_duplicate_yaml_key", TRAIN + " --config {tmp}/dup.yaml", 2,
     r"dup\.yaml: line 3: duplicate key 'epochs' \(first at line 1\)$", ["run"]),
    ("train_yaml_boolean_epochs", TRAIN + " epochs=yes", 2,
     r"command line: epochs=yes: expected a number, got the boolean true", ["run"]),
    ("run_check_validates_values", "run pipelines/demo.yaml --check --set subjects=0 --out {tmp}/out", 2,
     r"stage 'standin': subjects: Input should be greater than or equal to 1", ["out"]),
    ("report_split_not_evaluated", "report {tmp}/evaluated --split val --out {tmp}/rep", 2,
     r"not evaluated on val, only on test; report it with --split test", ["rep"]),
]


def _ecgka(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ecgka", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


# cases that start training in a subprocess (a few seconds each): `make test-fast` skips them
TRAINING_CASES = {"train_out_is_the_dataset", "train_out_is_foreign", "train_out_is_a_file", "train_batch_too_large"}


@pytest.mark.parametrize(("command", "code", "message", "absent"),
                         [pytest.param(*c[1:], id=c[0], marks=[pytest.mark.slow] if c[0] in TRAINING_CASES else [])
                          for c in CASES])
def test_bad_input_is_one_line(tmp_path, command, code, message, absent):
    _inputs(tmp_path)
    result = _ecgka(command.format(tmp=tmp_path).split())
    err = result.stderr.strip()
    assert result.returncode == code, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and err.count("\n") == 0, result.stderr[-2000:]
    assert __import__("re").search(message, err), err
    for name in absent:
        assert not (tmp_path / name).exists(), name
    assert sorted(p.name for p in (tmp_path / "precious").iterdir()) == ["notes.txt"]  # never touched
    assert (tmp_path / "afile").read_text() == "mine"
    ds = tmp_path / "ds"
    assert (ds / "manifest.json").is_file() and not (ds / "run.json").exists() and not (ds / "report.html").exists()


@pytest.mark.parametrize("order", ["file_first", "set_first", "set_repeated", "only_first"])
def test_set_before_or_after_the_pipeline_file(tmp_path, order):
    """``--set`` (and ``--only``) may come before the file: the file is the one word without '=' (with a
    '/' or a YAML suffix for ``--only``)."""
    _inputs(tmp_path)
    pipeline = str(tmp_path / "p.yaml")
    args = {"file_first": [pipeline, "--set", "greeting=hi", "extra=x"],
            "set_first": ["--set", "greeting=hi", "extra=x", pipeline],
            "set_repeated": ["--set", "greeting=hi", pipeline, "--set", "extra=x"],
            "only_first": ["--only", "first", pipeline, "--set", "greeting=hi"]}[order]
    result = _ecgka(["run", *args, "--check", "--out", str(tmp_path / "out")])
    assert result.returncode == 0, result.stderr
    assert "stages resolve and validate" in result.stdout and not (tmp_path / "out").exists()


def test_closed_stdout_ends_quietly():
    """``ecgka run --list | head``: the reader goes away; the command ends quietly (141, as for SIGPIPE)."""
    proc = subprocess.Popen([sys.executable, "-m", "ecgka", "run", "--list", "pipelines/demo.yaml"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # before the child writes a byte
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141 and err == ""


def test_closed_stdout_on_help_ends_quietly():
    proc = subprocess.Popen([sys.executable, "-m", "ecgka", "run", "--help"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) in (0, 141) and "Traceback" not in err and "BrokenPipe" not in err


# -- console output never fails the work (issue 19): real `> /dev/full` and `2> /dev/full` ---------------------

def _ecgka_to(args: list[str], stdout: str | None = None, stderr: str | None = None) -> subprocess.CompletedProcess:
    with open(stdout or os.devnull, "w") as out, open(stderr or os.devnull, "w") as err:
        return subprocess.run([sys.executable, "-m", "ecgka", *args], cwd=REPO, timeout=300, stdout=out,
                              stderr=err if stderr else subprocess.PIPE, text=True)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_synth_and_build_to_a_full_stdout_write_their_output(tmp_path):
    """The summary printed to a full stdout is lost; the stand-in and the dataset are written, exit 0."""
    standin = _ecgka_to(["synth", "--out", str(tmp_path / "s"), "--subjects", "300", "--workers", "2"],
                        stdout="/dev/full")
    assert standin.returncode == 0 and "Traceback" not in standin.stderr, standin.stderr[-2000:]
    build = _ecgka_to(["build", "--ecg-root", str(tmp_path / "s" / "ecg"), "--labs",
                       str(tmp_path / "s" / "hosp" / "labevents.csv.gz"), "--out", str(tmp_path / "ds"),
                       "--workers", "2"], stdout="/dev/full")
    assert build.returncode == 0 and "Traceback" not in build.stderr, build.stderr[-2000:]
    assert (tmp_path / "ds" / "manifest.json").is_file()
    assert "signals: 100%" in build.stderr, "not on a terminal: progress lines on stderr"


@pytest.mark.slow
@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_train_to_a_full_stderr_completes_the_run(tmp_path):
    """The epoch lines written to a full stderr are lost; the run completes (it was marked failed)."""
    write_dataset(tmp_path / "ds", n_train=64, n_val=16, n_test=16, n_samples=64)
    res = _ecgka_to(["train", "--data", str(tmp_path / "ds"), "--out", str(tmp_path / "run"), "model.preset=tiny",
                     "batch_size=32", "epochs=2", "threads=1", "tensorboard=false"], stdout=None,
                    stderr="/dev/full")
    assert res.returncode == 0
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "complete"


@pytest.mark.parametrize("command", ["build", "train", "report", "run", "evaluate"])
def test_an_output_path_that_cannot_be_written_is_one_line(command, monkeypatch, capsys):
    """PermissionError (root writes anywhere, so it is raised here) from any command: one line, exit 2."""
    import ecgka.cli as cli

    def denied(options):
        raise PermissionError(13, "Permission denied", "/data/out/manifest.json")

    real = cli.load_command
    monkeypatch.setattr(cli, "load_command", lambda info: real(info)._replace(run=denied))
    import ecgka.cli.options as options

    monkeypatch.setattr(options, "options_from_args", lambda model, args: None)
    argv = {"build": ["build", "--ecg-root", "e", "--labs", "l", "--out", "o"],
            "train": ["train", "--data", "d", "--out", "o"], "report": ["report", "r", "--out", "o"],
            "run": ["run", "p.yaml", "--out", "o"], "evaluate": ["evaluate", "r", "--data", "d"]}[command]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err == f"ecgka {command}: error: /data/out/manifest.json: permission denied\n"
