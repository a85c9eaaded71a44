"""A failed run never blocks the corrected one: config validation before anything is written, failures and
Ctrl-C recorded in run.json, what a new command does with an existing run folder, extending a run, the
console lines of ``ecgka train``, and a config error that answers without importing torch."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from shard_factory import write_dataset

from ecgka.catalog import Claim, ClaimState, FolderKind
from ecgka.errors import ConfigError, InputError
from ecgka.training import load_train_config, train_run

pytestmark = pytest.mark.slow  # end to end: `make test` runs it, `make test-fast` skips it

REPO = Path(__file__).resolve().parents[1]
FAST = ["model.preset=tiny", "batch_size=32", "progress=false", "threads=1", "tensorboard=false"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("ds"), n_train=96, n_val=32, n_test=16, n_samples=256)


@pytest.fixture(scope="module")
def complete(data_dir, tmp_path_factory):
    """A complete 2-epoch run (copied by tests that change it)."""
    run = tmp_path_factory.mktemp("runs") / "done"
    train_run(load_train_config(None, [*FAST, "epochs=2"]), data_dir, run)
    return run


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ecgka", "train", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def _one_line(res: subprocess.CompletedProcess, code: int = 2) -> str:
    assert res.returncode == code, res.stderr[-2000:]
    assert "Traceback" not in res.stderr and res.stderr.strip().count("\n") == 0, res.stderr
    return res.stderr.strip()


def _status(run: Path) -> dict:
    return json.loads((run / "run.json").read_text())


def _copy(run: Path, dst: Path) -> Path:
    shutil.copytree(run, dst)
    return dst


# -- validation: one line before anything is written ---------------------------------------------------------

@pytest.mark.parametrize("override, message", [
    ("optim.lr=-0.1", r"optim\.lr=-0\.1: .*greater than 0"),
    ("optim.lr=0", r"optim\.lr=0: .*greater than 0"),
    ("optim.weight_decay=-1e-5", r"weight_decay.*greater than or equal to 0"),
    ("optim.gamma=0", r"optim\.gamma=0: .*greater than 0"),
    ("optim.milestones=[8,5]", r"milestones must be strictly increasing"),
    ("optim.milestones=[5,5]", r"milestones must be strictly increasing"),
    ("optim.milestones=[0,3]", r"each must be >= 1"),
    ("optim.milestones=[5,12]", r"\[12\] at or after epochs=10 would never lower lr"),
    ("optim.milestones=[10]", r"\[10\] at or after epochs=10"),
    ("epochs=0", r"epochs=0: .*greater than or equal to 1"),
    ("batch_size=1", r"batch_size=1: .*greater than or equal to 2"),
    ("data.eval_batch_size=0", r"eval_batch_size.*greater than or equal to 1"),
    ("data.prefetch=-1", r"prefetch.*greater than or equal to 0"),
    ("threads=0", r"threads=0: .*greater than or equal to 1"),
])
def test_cli_bad_optimiser_and_schedule_values_are_one_line_before_anything_is_written(override, message, tmp_path):
    err = _one_line(_cli("--data", str(tmp_path / "no-data"), "--out", str(tmp_path / "r"), override))
    assert err.startswith("ecgka train: error: command line: ") and re.search(message, err), err
    assert not (tmp_path / "r").exists()


def test_milestones_are_checked_where_they_are_written(tmp_path):
    cfg = load_train_config(None, ["epochs=3"])  # a short run of the paper schedule: [5, 8] never fire
    assert cfg.optim.milestones == [5, 8]
    assert load_train_config(REPO / "configs/train/vanilla.yaml", ["epochs=1"]).epochs == 1
    assert load_train_config(None, ["epochs=3", "optim.milestones=[1,2]"]).optim.milestones == [1, 2]
    assert load_train_config(None, ["epochs=3", "optim.milestones=[]"]).optim.milestones == []
    (tmp_path / "short.yaml").write_text(f"extends: {REPO}/configs/train/vanilla.yaml\nepochs: 2\n")
    assert load_train_config(tmp_path / "short.yaml").optim.milestones == [5, 8]  # inherited: a short run
    (tmp_path / "own.yaml").write_text("epochs: 1\n")
    assert load_train_config(tmp_path / "own.yaml").epochs == 1
    (tmp_path / "bad.yaml").write_text("epochs: 4\noptim: {milestones: [2, 4]}\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: optim\.milestones \[2, 4\]: \[4\] at or after epochs=4"):
        load_train_config(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match=r"^command line: optim\.milestones=\[2,3\]: .*epochs=3"):
        load_train_config(None, ["epochs=3", "optim.milestones=[2,3]"])


def test_every_shipped_config_keeps_its_milestones_inside_its_epochs():
    for path in sorted((REPO / "configs/train").glob("*.yaml")):
        cfg = load_train_config(path)
        assert all(m < cfg.epochs for m in cfg.optim.milestones), path


# -- failures are recorded; the corrected command replaces them -----------------------------------------------

def test_cli_a_failed_run_records_why_and_the_corrected_command_replaces_it(data_dir, tmp_path):
    run = tmp_path / "r"
    err = _one_line(_cli("--data", str(data_dir), "--out", str(run), *FAST, "epochs=2", "optim.lr=1e30"))
    assert re.search(r"epoch 1, step \d+: the training loss is (nan|inf)", err)
    info = _status(run)
    assert info["status"] == "failed" and info["error"]["type"] == "NonFiniteLossError"
    assert re.match(r"epoch 1, step \d+: the training loss", info["error"]["message"])
    res = _cli("--data", str(data_dir), "--out", str(run), *FAST, "epochs=2")
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"replacing the failed run in {run}" in res.stderr
    info = _status(run)
    assert info["status"] == "complete" and "error" not in info and info["epochs_done"] == 2
    assert (run / ".ecgka-folder.json").is_file()


def test_an_unexpected_exception_is_recorded_as_failed(data_dir, tmp_path, monkeypatch):
    from ecgka.training.loop import Trainer

    def boom(self, epoch):
        raise RuntimeError("CUDA out of memory\nsecond line")

    monkeypatch.setattr(Trainer, "run_epoch", boom)
    with pytest.raises(RuntimeError):
        train_run(load_train_config(None, [*FAST, "epochs=2"]), data_dir, tmp_path / "r")
    assert _status(tmp_path / "r")["error"] == {"type": "RuntimeError", "message": "CUDA out of memory"}
    assert _status(tmp_path / "r")["status"] == "failed"


def test_a_failed_run_with_the_same_config_starts_again(data_dir, tmp_path, monkeypatch):
    from ecgka.training.loop import Trainer

    run = tmp_path / "r"
    real = Trainer.run_epoch
    monkeypatch.setattr(Trainer, "run_epoch", lambda self, epoch: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        train_run(load_train_config(None, [*FAST, "epochs=2"]), data_dir, run)
    monkeypatch.setattr(Trainer, "run_epoch", real)
    lines = []
    info = train_run(load_train_config(None, [*FAST, "epochs=2"]), data_dir, run, log=lines.append)
    assert info["status"] == "complete" and lines == [f"replacing the failed run in {run}"]


def test_a_never_started_run_is_replaced_without_ceremony(data_dir, tmp_path):
    """``status: running`` and no last.pt: what the torch traceback of ``optim.lr=-0.1`` used to leave."""
    run = tmp_path / "r"
    (run / "checkpoints").mkdir(parents=True)
    Claim(run, FolderKind.RUN, ClaimState.NEW).write_marker("another config")
    (run / "config.yaml").write_text("name: run\noptim: {lr: -0.1}\n")
    (run / "run.json").write_text(json.dumps({"status": "running", "dataset_fingerprint": "x"}))
    lines = []
    info = train_run(load_train_config(None, [*FAST, "epochs=1"]), data_dir, run, log=lines.append)
    assert info["status"] == "complete"
    assert f"replacing the unfinished run in {run} (no epoch was saved)" in lines


def test_cli_a_complete_run_with_another_config_is_refused_then_replaced_with_force(complete, data_dir, tmp_path):
    run = _copy(complete, tmp_path / "r")
    before = (run / "checkpoints/last.pt").read_bytes()
    err = _one_line(_cli("--data", str(data_dir), "--out", str(run), *FAST, "epochs=2", "seed=1"))
    assert re.search(r"holds a complete run with a different config \(differs in seed\); pass --force to start "
                     r"it over, or choose another --out", err), err
    assert (run / "checkpoints/last.pt").read_bytes() == before
    res = _cli("--data", str(data_dir), "--out", str(run), *FAST, "epochs=2", "seed=1", "--force")
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"replacing the complete run in {run} (--force; it differed in seed)" in res.stderr
    assert load_train_config(None, []).seed == 0 and "seed: 1" in (run / "config.yaml").read_text()


def test_a_run_of_another_dataset_is_refused(complete, tmp_path):
    other = write_dataset(tmp_path / "other", n_train=96, n_val=32, n_test=16, n_samples=256, seed=5)
    run = _copy(complete, tmp_path / "r")
    with pytest.raises(ConfigError, match=r"different config \(differs in dataset\); pass --force"):
        train_run(load_train_config(None, [*FAST, "epochs=2"]), other, run)


def test_a_complete_run_is_skipped_saying_so(complete, data_dir):
    before = (complete / "checkpoints/last.pt").stat().st_mtime_ns
    lines = []
    train_run(load_train_config(None, [*FAST, "epochs=2", "progress=true"]), data_dir, complete, log=lines.append)
    assert lines == [f"{complete}: already complete (2 epochs); nothing to do"]
    assert (complete / "checkpoints/last.pt").stat().st_mtime_ns == before


# -- Ctrl-C and resume --------------------------------------------------------------------------------------

def _interrupt_in_epoch(monkeypatch, n: int) -> None:
    from ecgka.training.loop import Trainer

    real = Trainer.run_epoch

    def run_epoch(self, epoch):
        if epoch == n:
            raise KeyboardInterrupt
        return real(self, epoch)

    monkeypatch.setattr(Trainer, "run_epoch", run_epoch)


def test_ctrl_c_leaves_interrupted_and_the_same_command_resumes(data_dir, tmp_path, monkeypatch):
    run = tmp_path / "r"
    _interrupt_in_epoch(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        train_run(load_train_config(None, [*FAST, "epochs=3"]), data_dir, run)
    info = _status(run)
    assert info["status"] == "interrupted"
    assert info["error"] == {"type": "KeyboardInterrupt", "message": "interrupted; resume with the same command"}
    with pytest.raises(ConfigError, match="holds a resumable run with a different config"):
        train_run(load_train_config(None, [*FAST, "epochs=3", "seed=3"]), data_dir, run)
    assert _status(run)["status"] == "interrupted", "a refused command leaves the run as it was"
    monkeypatch.undo()
    lines = []
    info = train_run(load_train_config(None, [*FAST, "epochs=3"]), data_dir, run, log=lines.append)
    assert lines == [f"{run}: resuming from epoch 2 of 3"]
    assert info["status"] == "complete" and info["epochs_done"] == 3 and "error" not in info


def test_cli_ctrl_c_says_how_to_resume(data_dir, tmp_path):
    run = tmp_path / "r"
    cmd = [sys.executable, "-m", "ecgka", "train", "--data", str(data_dir), "--out", str(run), *FAST, "epochs=200"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while not (run / "log.jsonl").is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and out == ""
    last = err.strip().splitlines()[-1]
    assert last == f"ecgka train: interrupted; {run} keeps its last saved epoch: resume with the same command"
    assert _status(run)["status"] == "interrupted"


# -- extending a run ------------------------------------------------------------------------------------------

def test_extending_a_complete_run_equals_training_longer_from_the_start(complete, data_dir, tmp_path):
    run = _copy(complete, tmp_path / "r")
    lines = []
    info = train_run(load_train_config(None, [*FAST, "epochs=3"]), data_dir, run, log=lines.append)
    assert lines == [f"extending the run in {run} from 2 to 3 epochs", f"{run}: resuming from epoch 3 of 3"]
    direct = train_run(load_train_config(None, [*FAST, "epochs=3"]), data_dir, tmp_path / "direct")
    for name in ("last", "best"):
        a = torch.load(run / f"checkpoints/{name}.pt", weights_only=True)["model"]
        b = torch.load(tmp_path / f"direct/checkpoints/{name}.pt", weights_only=True)["model"]
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert (info["epochs_done"], info["best_epoch"], info["best_value"]) == \
        (direct["epochs_done"], direct["best_epoch"], direct["best_value"])
    assert [json.loads(x)["epoch"] for x in (run / "log.jsonl").read_text().splitlines()] == [0, 1, 2]
    assert "epochs: 3" in (run / "config.yaml").read_text()


def test_extending_keeps_the_step_schedule_of_the_longer_run(complete, data_dir, tmp_path):
    run = _copy(complete, tmp_path / "r")
    with pytest.raises(ConfigError, match=r"differs in epochs, optim\)"):  # the schedule is part of the run
        train_run(load_train_config(None, [*FAST, "epochs=4", "optim.milestones=[3]"]), data_dir, run)
    train_run(load_train_config(None, [*FAST, "epochs=4"]), data_dir, run)  # [5, 8]: constant lr, as direct
    lrs = [json.loads(x)["lr"] for x in (run / "log.jsonl").read_text().splitlines()]
    assert lrs == [1e-3] * 4


def test_a_run_cannot_be_shortened(complete, data_dir):
    with pytest.raises(ConfigError, match=r"holds a complete run of 2 epochs; a run cannot be shortened to 1 .*"
                                          r"--force.*another --out"):
        train_run(load_train_config(None, [*FAST, "epochs=1"]), data_dir, complete)


# -- where a run may be written ---------------------------------------------------------------------------------

def test_cli_out_that_is_a_dataset_a_user_folder_or_a_file_is_refused(data_dir, tmp_path):
    listing = sorted(p.name for p in data_dir.iterdir())
    err = _one_line(_cli("--data", str(data_dir), "--out", str(data_dir), *FAST))
    assert "is an ecgka dataset folder, not a run folder; choose another --out" in err
    assert sorted(p.name for p in data_dir.iterdir()) == listing
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("precious")
    err = _one_line(_cli("--data", str(data_dir), "--out", str(mine), *FAST))
    assert "not empty and was not written by ecgka" in err
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    (tmp_path / "file").write_text("x")
    err = _one_line(_cli("--data", str(data_dir), "--out", str(tmp_path / "file"), *FAST))
    assert "is a file, not a folder" in err and (tmp_path / "file").read_text() == "x"


def test_cli_an_empty_training_split_is_one_line(tmp_path):
    data = write_dataset(tmp_path / "ds", n_train=32, n_val=32, n_test=16, n_samples=256)
    shutil.rmtree(data / "split=train")
    manifest = json.loads((data / "manifest.json").read_text())
    manifest["counts"]["train"] = 0
    (data / "manifest.json").write_text(json.dumps(manifest))
    err = _one_line(_cli("--data", str(data), "--out", str(tmp_path / "r"), *FAST))
    assert f"{data}: the training split is empty (0 samples): nothing to train on" in err
    assert not (tmp_path / "r").exists()


def test_an_empty_training_split_is_refused_before_the_batch_rule():
    from ecgka.training.api import check_steps

    with pytest.raises(InputError, match="the training split is empty"):
        check_steps(0, 2)


# -- the console --------------------------------------------------------------------------------------------------

def test_cli_train_ends_with_the_run_the_best_checkpoint_and_the_next_command(data_dir, tmp_path):
    run = tmp_path / "r"
    res = _cli("--data", str(data_dir), "--out", str(run), *FAST, "epochs=2")
    assert res.returncode == 0, res.stderr[-2000:]
    best = _status(run)["best_epoch"]  # counted from 1, as the console counts
    lines = res.stdout.strip().splitlines()
    assert re.fullmatch(rf"trained Vanilla in {re.escape(str(run))}: best epoch {best}/2 \(balanced_mae "
                        r"\d+\.\d{4} on val\)", lines[0]), lines
    assert lines[1:] == [f"  best checkpoint: {run / 'checkpoints' / 'best.pt'}",
                         f"  next: ecgka evaluate {run} --data {data_dir}"]
    again = _cli("--data", str(data_dir), "--out", str(run), *FAST, "epochs=2")
    assert again.returncode == 0 and f"{run}: already complete (2 epochs); nothing to do" in again.stderr
    assert again.stdout == res.stdout


# -- start-up ---------------------------------------------------------------------------------------------------

HEAVY = ("torch", "pandas", "pyarrow", "scipy", "sklearn", "numpy", "tqdm")


@pytest.mark.parametrize("argv", [
    ["train", "--data", "X", "--out", "Y", "batchsize=3"],
    ["train", "--data", "X", "--out", "Y", "optim.lr=-1"],
    ["train", "--help"],
    ["--help"],
])
def test_help_and_a_train_config_error_import_no_heavy_module(argv):
    code = ("import sys\nfrom ecgka.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert res.stdout.strip().splitlines()[-1] == "[]", res.stdout + res.stderr
