"""Trainer hooks and the epoch meter: log timestamps, TensorBoard scalars, the epoch summary, the cadence."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timezone

import pandas as pd
import pytest
import torch
from shard_factory import write_dataset

from ecgka.catalog import RunDir
from ecgka.training import load_train_config, train_run
from ecgka.training.meter import EpochMeter
from ecgka.training.sources import EcgSplit

FAST = ["model.preset=tiny", "batch_size=32", "threads=1", "epochs=2"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("ds"), n_train=96, n_val=32, n_test=16, n_samples=256)


def test_log_lines_carry_wall_clock_time_and_read_as_a_table(data_dir, tmp_path):
    before = datetime.now(timezone.utc).replace(microsecond=0)
    train_run(load_train_config(None, [*FAST, "progress=false"]), data_dir, tmp_path / "run")
    log = pd.read_json(RunDir(tmp_path / "run").log_path, lines=True)  # what a plotting tool does
    assert log["epoch"].tolist() == [0, 1]
    times = [datetime.fromisoformat(r["time"]) for r in RunDir(tmp_path / "run").read_log()]
    assert before <= times[0] <= times[1] <= datetime.now(timezone.utc)


def test_tensorboard_hook_writes_the_epoch_scalars(data_dir, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = RunDir(tmp_path / "run")
    train_run(load_train_config(None, [*FAST, "progress=false"]), data_dir, run.path)
    events = EventAccumulator(str(run.tensorboard_dir))
    events.Reload()
    log = run.read_log()
    for tag, key in (("train/loss", "train_loss"), ("lr", "lr")):
        scalars = events.Scalars(tag)
        assert [s.step for s in scalars] == [1, 2]
        assert [s.value for s in scalars] == pytest.approx([r[key] for r in log], rel=1e-6)
    assert [s.value for s in events.Scalars("val/balanced_mae")] == pytest.approx(
        [r["val"]["balanced_mae"] for r in log], rel=1e-6)


def test_tensorboard_off_writes_nothing(data_dir, tmp_path):
    run = RunDir(tmp_path / "run")
    train_run(load_train_config(None, [*FAST, "progress=false", "tensorboard=false"]), data_dir, run.path)
    assert not run.tensorboard_dir.exists()


@pytest.mark.slow
def test_epoch_summary_counts_epochs_from_one(data_dir, tmp_path):
    cmd = [sys.executable, "-m", "ecgka", "train", "--data", str(data_dir), "--out", str(tmp_path / "run"), *FAST]
    err = subprocess.run(cmd, capture_output=True, text=True, check=True).stderr
    lines = [line for line in err.splitlines() if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in lines] == ["epoch 1/2", "epoch 2/2"]
    assert "\r" not in err  # no progress bar when stderr is not a terminal


def test_meter_sums_in_step_order_across_a_snapshot():
    losses = [torch.tensor(0.1 * i) for i in range(25)]
    whole = EpochMeter(flush_every=10)
    for value in losses:
        whole.add(value, {"sample": value * 2}, 4)
    first = EpochMeter(flush_every=10)
    for value in losses[:13]:
        first.add(value, {"sample": value * 2}, 4)
    resumed = EpochMeter(first.snapshot(), flush_every=10)
    for value in losses[13:]:
        resumed.add(value, {"sample": value * 2}, 4)
    a, b = whole.close(), resumed.close()
    assert (a["loss"], a["terms"], a["batches"], a["samples"]) == (b["loss"], b["terms"], b["batches"], b["samples"])
    assert a["batches"] == 25 and a["samples"] == 100


def test_a_nan_or_infinite_validation_metric_is_never_selected_as_best():
    """Selection (``Trainer._record``): only finite values compete; a NaN first epoch does not block later."""
    from ecgka.training.config import TrainConfig
    from ecgka.training.distributed import DistInfo
    from ecgka.training.loop import Trainer

    class ScriptedValidation(Trainer):  # validation metrics given, the selection rule under test
        def validate(self):
            return {self.cfg.selection_metric: self.script.pop(0)}

    def best_epochs(values):
        trainer = ScriptedValidation(cfg=TrainConfig(), model=None, net=None, criterion=None, optimizer=None,
                                     train=EcgSplit(None, [0]), val=None, runtime=None, info=DistInfo(), grid=None,
                                     train_counts=None)
        trainer.script = list(values)
        sums = {"loss": 1.0, "terms": {}, "batches": 1, "samples": 4, "seconds": 1.0, "data_seconds": 0.0}
        flags = [trainer._record(epoch, 0.1, sums)["is_best"] for epoch in range(len(values))]
        return [e for e, f in enumerate(flags) if f], trainer.best

    nan, inf = float("nan"), float("inf")
    assert best_epochs([nan, 0.5, inf, 0.7, -inf, 0.4, nan]) == ([1, 5], {"epoch": 5, "value": 0.4,
                                                                          "metric": TrainConfig().selection_metric})
    assert best_epochs([nan, inf, nan]) == ([], {})


class _Terminal:
    """A stand-in stderr that says it is a terminal (and records what is drawn)."""

    def __init__(self):
        self.text = ""

    def isatty(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.text += text
        return len(text)

    def flush(self) -> None: ...


@pytest.mark.parametrize("tty, progress, drawn", [(True, True, True), (True, False, False), (False, True, False)])
def test_progress_bars_are_drawn_only_on_a_terminal_and_when_wanted(monkeypatch, tty, progress, drawn):
    import io

    from ecgka.progress import progress_bar, progress_enabled

    stream = _Terminal() if tty else io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    assert progress_enabled(progress) is drawn
    with progress_bar(range(3), progress=progress, desc="work") as bar:
        assert bar.disable is (not drawn)
        assert list(bar) == [0, 1, 2]
    text = stream.text if tty else stream.getvalue()
    assert ("work" in text) is drawn


def test_an_explicit_disable_wins_and_tqdm_is_imported_only_for_a_bar():
    code = ("import sys\nimport ecgka.progress as p\nassert 'tqdm' not in sys.modules\n"
            "assert p.progress_bar(range(2), disable=True).disable\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_epoch_bar_uses_the_shared_progress_helper(data_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "stderr", _Terminal())
    train_run(load_train_config(None, [*FAST, "epochs=1", "tensorboard=false"]), data_dir, tmp_path / "run")
    assert "epoch 1/1" in sys.stderr.text and "batch" in sys.stderr.text  # the bar and the summary line
