"""What the model registry guarantees (docs/retraining.md, "Guarantees"): a version is self-contained and
verified, versions are created atomically under a lock (real concurrent processes), incomplete runs and
metrics of other weights are refused, corrupted registry files are one line naming the file, paths work
from any working directory, alias changes carry a reason into the log, and the card says what the model is."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from shard_factory import write_dataset

from ecgka.catalog import RegistryDir, RunDir
from ecgka.cli import main
from ecgka.errors import InputError
from ecgka.evaluation import EvalConfig, evaluate_run
from ecgka.io import sha256_file
from ecgka.release.registry import ModelRegistry, resolve_model
from ecgka.training import load_train_config, predict, train_run

REPO = Path(__file__).resolve().parents[1]
FAST = ["model.preset=tiny", "batch_size=32", "progress=false", "threads=1", "epochs=1"]

pytestmark = pytest.mark.slow  # end to end: trains, exports and starts processes


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny run trained and evaluated with a *relative* dataset path (from its parent folder)."""
    root = tmp_path_factory.mktemp("guarantees")
    write_dataset(root / "ds", n_train=96, n_val=48, n_test=48, n_samples=200, leads=("II",), shard_rows=48)
    here = os.getcwd()
    os.chdir(root)
    try:
        train_run(load_train_config(None, FAST), "ds", "run")
        evaluate_run("run", "ds", "test", EvalConfig(n_boot=20))
    finally:
        os.chdir(here)
    return root / "ds", root / "run"


@pytest.fixture(scope="module")
def other_run(trained):
    """A second run on the same dataset with other weights (another seed)."""
    data, run = trained
    other = run.parent / "run_seed1"
    train_run(load_train_config(None, [*FAST, "seed=1"]), data, other)
    evaluate_run(other, data, "test", EvalConfig(n_boot=20))
    return other


def _clone(run: Path, dest: Path) -> Path:
    """Another run folder with the same weights (a distinct run for the registry)."""
    shutil.copytree(run, dest)
    return dest


def _cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ecgka", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


# ---- 1. self-contained, verified versions ----------------------------------------------------------------------


def test_a_version_is_a_verified_copy_independent_of_its_run(trained, tmp_path):
    data, run = trained
    origin = _clone(run, tmp_path / "origin")
    reg = ModelRegistry(tmp_path / "reg")
    name = reg.register(origin)
    record = reg.record(name)
    copy = reg.run_copy(name)
    assert copy == RegistryDir(reg.path).run_dir(name) and RunDir(copy).is_run()
    assert record["run"]["path"] == str(origin.resolve())  # informational only
    assert sha256_file(RunDir(copy).checkpoint("best")) == record["run"]["checkpoint_sha256"]
    assert {"run/config.yaml", "run/run.json", "run/checkpoints/best.pt", "run/eval/test/metrics.json",
            "export/model.ts", "export/card.json"} <= set(record["files"])
    want = predict(origin, data, "test")["prediction"].to_numpy()
    shutil.rmtree(origin)  # the run folder is gone: the version still evaluates, exports and scores
    path, rec = resolve_model(f"{reg.path}@{name}")
    assert path == copy and rec["version"] == name
    np.testing.assert_allclose(predict(path, data, "test")["prediction"].to_numpy(), want, atol=1e-6)
    from ecgka.release.export import export_run

    assert export_run(path, tmp_path / "export").is_file()
    # a changed file of the copy is refused in one line naming it
    weights = RunDir(copy).checkpoint("best")
    weights.write_bytes(weights.read_bytes() + b"x")
    with pytest.raises(InputError, match=r"best\.pt: SHA-256 differs") as err:
        resolve_model(f"{reg.path}@{name}")
    assert "\n" not in str(err.value)
    with pytest.raises(InputError, match="best.pt"):
        reg.run_copy(name)


# ---- 2. atomic and locked: real concurrent processes -------------------------------------------------------------


def test_concurrent_registers_make_distinct_versions(trained, tmp_path):
    _, run = trained
    runs = [_clone(run, tmp_path / f"run{i}") for i in range(4)]
    reg = tmp_path / "reg"
    procs = [subprocess.Popen([sys.executable, "-m", "ecgka", "registry", "register", str(reg), str(r)], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in runs]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, outs
    said = sorted(out.strip().rsplit("@", 1)[-1] for out, _ in outs)
    assert said == ["v0001", "v0002", "v0003", "v0004"]
    registry = ModelRegistry(reg)
    assert registry.versions() == said
    assert sorted(registry.record(v)["run"]["path"] for v in said) == sorted(str(r.resolve()) for r in runs)
    events = [e for e in registry.read_log() if e["event"] == "register"]
    assert sorted(e["version"] for e in events) == said
    assert not [p for p in (reg / "versions").iterdir() if p.name.startswith(".")]  # no temporary left


def test_the_lock_is_reentrant_here_and_refuses_another_process(tmp_path):
    from ecgka.locks import holder, is_held_here

    reg = ModelRegistry(tmp_path / "reg")
    code = ("import sys\nfrom ecgka.locks import FolderLockedError\nfrom ecgka.release.registry import ModelRegistry\n"
            "try:\n    ModelRegistry(sys.argv[1]).locked(wait=0.2).__enter__()\n"
            "except FolderLockedError as exc:\n    print(exc)\n    sys.exit(exc.exit_code)\n")
    with reg.locked():
        assert is_held_here(reg.path) and holder(reg.path)["pid"] == os.getpid()
        with reg.locked():  # re-entrant: promotion holds it around its own writes
            reg.log("note", reason="inside")
        other = subprocess.run([sys.executable, "-c", code, str(reg.path)], cwd=REPO, capture_output=True,
                               text=True, timeout=120)
    assert other.returncode == 75 and f"model registry is being written by process {os.getpid()}" in other.stdout
    assert holder(reg.path) is None and [e["event"] for e in reg.read_log()] == ["note"]


# ---- 3. refusals --------------------------------------------------------------------------------------------------


def test_evaluate_records_the_checkpoint_sha(trained):
    _, run = trained
    metrics = RunDir(run).read_metrics("test")
    assert metrics["model"]["checkpoint_sha256"] == sha256_file(RunDir(run).checkpoint("best"))


def test_incomplete_runs_and_metrics_of_other_weights_are_refused(trained, tmp_path):
    _, run = trained
    reg = ModelRegistry(tmp_path / "reg")
    killed = _clone(run, tmp_path / "killed")
    info = json.loads((killed / "run.json").read_text())
    (killed / "run.json").write_text(json.dumps({**info, "status": "running"}))
    with pytest.raises(InputError, match="run is not complete"):
        reg.register(killed)
    stale = _clone(run, tmp_path / "stale")
    metrics_path = RunDir(stale).metrics_path("test")
    metrics = json.loads(metrics_path.read_text())
    metrics_path.write_text(json.dumps({**metrics, "model": {"checkpoint_sha256": "0" * 64}}))
    want = f"metrics of {RunDir(stale.resolve()).eval_dir('test')} are of another checkpoint; run ecgka evaluate again"
    with pytest.raises(InputError) as err:
        reg.register(stale)
    assert str(err.value) == want
    metrics_path.write_text(json.dumps({k: v for k, v in metrics.items() if k != "model"}))  # an old evaluation
    with pytest.raises(InputError, match="are of another checkpoint"):
        reg.register(stale)
    assert reg.versions() == []
    # the same run and checkpoint again: the existing version, said so
    good = _clone(run, tmp_path / "good")
    first = _cli("registry", "register", str(reg.path), str(good))
    again = _cli("registry", "register", str(reg.path), str(good))
    assert first.returncode == 0 and "registered" in first.stdout
    assert again.returncode == 0 and "already registered as" in again.stdout and again.stdout.strip().endswith("v0001")
    assert reg.versions() == ["v0001"] and len(reg.read_log()) == 1


# ---- 4. corrupted registry files ----------------------------------------------------------------------------------


@pytest.mark.parametrize("broken", ["aliases.json", "model.json", "log.jsonl"])
def test_corrupted_registry_files_are_one_line_naming_the_file(trained, other_run, tmp_path, broken, capsys):
    from ecgka.release.promote import promote
    from ecgka.release.scoring import load_scorer

    _, run = trained
    reg = ModelRegistry(tmp_path / "reg")
    reg.register(_clone(run, tmp_path / "a"))
    reg.register(_clone(other_run, tmp_path / "a2"))
    reg.set_alias("champion", "v0001", "first")
    path = {"aliases.json": reg.dir.aliases_path, "model.json": reg.dir.model_json("v0001"),
            "log.jsonl": reg.dir.log_path}[broken]
    text = path.read_text()
    path.write_text(text[: len(text) // 2] if broken != "log.jsonl" else text + '{"time": "2026-\n')
    other = _clone(run, tmp_path / "b")
    for argv in (["registry", "list", str(reg.path)], ["registry", "show", f"{reg.path}@champion"],
                 ["registry", "register", str(reg.path), str(other)]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and broken in err, (argv, err)
    for call in (lambda: load_scorer(f"{reg.path}@champion"), lambda: promote(reg.path, "v2")):
        with pytest.raises(InputError, match=broken.replace(".", r"\.")) as exc:
            call()
        assert "\n" not in str(exc.value)


# ---- 5. paths from any working directory --------------------------------------------------------------------------


def test_paths_are_absolute_and_register_works_from_another_folder(trained, tmp_path):
    data, run = trained
    info = RunDir(run).read_run()
    assert info["dataset_dir"] == str(data.resolve())  # trained with the relative path "ds"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = _cli("registry", "register", "reg", str(run), cwd=elsewhere)
    assert out.returncode == 0, out.stderr
    card = json.loads((elsewhere / "reg" / "versions" / "v0001" / "export" / "card.json").read_text())
    assert card["dataset"]["path"] == str(data.resolve())
    assert ModelRegistry(elsewhere / "reg").record("v0001")["dataset"]["path"] == str(data.resolve())


# ---- 6. aliases with a reason: challenger, rollback, archive ------------------------------------------------------


def test_alias_rollback_and_archive_are_logged_with_reasons(trained, tmp_path, capsys):
    _, run = trained
    reg = ModelRegistry(tmp_path / "reg")
    for i in range(3):
        reg.register(_clone(run, tmp_path / f"r{i}"))
    reg.set_alias("champion", "v0001", "first")
    reg.set_alias("champion", "v0002", "passed the gate")
    r = str(reg.path)
    assert main(["registry", "alias", r, "set", "challenger", "v3", "--reason", "try it"]) == 0
    assert reg.aliases()["challenger"] == "v0003"
    assert main(["registry", "alias", r, "unset", "challenger", "--reason", "withdrawn"]) == 0
    assert "challenger" not in reg.aliases()
    assert main(["registry", "rollback", r, "v3", "--reason", "newer"]) == 2  # not earlier than the champion
    assert "not earlier" in capsys.readouterr().err
    assert main(["registry", "rollback", r, "v1", "--reason", "hyperkalaemia misses on ward 5"]) == 0
    assert reg.aliases()["champion"] == "v0001"
    assert main(["registry", "archive", r, "v1", "--reason", "x"]) == 2  # the champion cannot be archived
    assert main(["registry", "archive", r, "v2", "--reason", "withdrawn after review"]) == 0
    capsys.readouterr()
    log = reg.read_log()
    alias_events = [e for e in log if e["event"] in ("alias", "rollback", "archive")]
    assert [(e["event"], e["alias"], e["version"], e["previous"], e["reason"]) for e in alias_events] == [
        ("alias", "champion", "v0001", None, "first"),
        ("alias", "champion", "v0002", "v0001", "passed the gate"),
        ("alias", "challenger", "v0003", None, "try it"),
        ("alias", "challenger", None, "v0003", "withdrawn"),
        ("rollback", "champion", "v0001", "v0002", "hyperkalaemia misses on ward 5"),
        ("archive", None, "v0002", None, "withdrawn after review")]
    assert all(e["time"].endswith("Z") for e in alias_events)
    # archived: kept, never served, never champion (nor challenger) unless explicitly asked for
    assert "v0002" in reg.versions()
    with pytest.raises(InputError, match="archived"):
        resolve_model(f"{r}@v2")
    assert resolve_model(f"{r}@v2", allow_archived=True)[1]["version"] == "v0002"
    with pytest.raises(InputError, match="archived"):
        reg.set_alias("champion", "v0002", "no")
    with pytest.raises(InputError, match="archived"):
        reg.rollback("v2", "no")
    assert main(["registry", "alias", r, "set", "challenger", "v2", "--reason", "no"]) == 2
    assert main(["registry", "list", r]) == 0
    assert "archived" in capsys.readouterr().out


# ---- 7. the card --------------------------------------------------------------------------------------------------


def test_the_registry_card_names_version_sha_metrics_and_intended_use(trained, tmp_path):
    _, run = trained
    reg = ModelRegistry(tmp_path / "reg")
    name = reg.register(_clone(run, tmp_path / "a"))
    record = reg.record(name)
    export = RegistryDir(reg.path).export_dir(name)
    card = export.read_card()
    assert card["registry"]["version"] == name and card["registry"]["path"] == str(reg.path.resolve())
    assert card["model"]["checkpoint_sha256"] == record["run"]["checkpoint_sha256"]
    assert card["model"]["file_sha256"] == sha256_file(export.model_path("torchscript"))
    assert card["run"]["path"] == str(reg.run_copy(name))
    metrics = RunDir(run).read_metrics("test")
    assert card["metrics"]["mae"]["few"] == metrics["regression"]["few"]["mae"]
    assert card["metrics"]["mae"]["all"] == metrics["regression"]["all"]["mae"]
    hyper = metrics["clinical"]["conditions"]["hyper"]["operating_point"]["test"]
    assert card["metrics"]["clinical"]["hyper"] == {"sensitivity": hyper["sensitivity"],
                                                    "specificity": hyper["specificity"]}
    use = " ".join(card["intended_use"].values())
    for words in ("research use", "not a diagnostic device", "adults", "ECG-Ka-DIR", "12-lead ECG", "laboratory"):
        assert words in use
