"""Bad command lines give one line on stderr, no traceback, the right exit code, and leave nothing behind.

Table-driven: each case names its command line (with ``{tmp}`` for a scratch folder prepared by
``_inputs``), the exit code, a regex of the one-line message and the paths that must not exist after it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

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
    (tmp / "labevents.csv").write_text("subject_id,itemid,charttime,valuenum\n")


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
]


def _ecgka(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ecgka", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize(("command", "code", "message", "absent"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_bad_input_is_one_line(tmp_path, command, code, message, absent):
    _inputs(tmp_path)
    result = _ecgka(command.format(tmp=tmp_path).split())
    err = result.stderr.strip()
    assert result.returncode == code, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and err.count("\n") == 0, result.stderr[-2000:]
    assert __import__("re").search(message, err), err
    for name in absent:
        assert not (tmp_path / name).exists(), name


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
