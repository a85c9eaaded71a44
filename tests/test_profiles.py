"""Config profiles ``paper`` and ``released`` (docs/methods.md, "Profiles"): every shipped profile resolves,
each difference between the paper's appendix and the released code is selectable, and the options that
change behaviour do what they say (released views, FDS epoch pass, last partial batches, released
checkpoints, IMDB-WIKI preparation rules, training ages above the grid)."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from age_factory import TINY, make_standin
from scipy.io import savemat

from ecgka.errors import ConfigError, InputError
from ecgka.labels import LabelGrid
from ecgka.losses import build_criterion
from ecgka.losses.conr import ConRMethod, conr_loss
from ecgka.losses.factory import LossContext
from ecgka.models import create_model
from ecgka.resources import shipped_configs
from ecgka.training.build import build_optimizer
from ecgka.training.config import load_train_config
from ecgka.training.loader import epoch_batches, iterate_batches
from ecgka.training.two_stage import load_init
from ecgka.training.views import augmented_views, training_views, use_released_views

AGE_METHODS = ("vanilla", "lds", "fds", "ranksim", "conr", "balanced_mse", "dist_loss",
               "lds_dist", "fds_dist", "ranksim_dist", "conr_dist", "balanced_mse_dist")
PROFILES = ("paper", "released")
DATASETS = ("agedb", "imdb_wiki")
AGE = [f"age/{p}/{d}/{m}" for p in PROFILES for d in DATASETS for m in AGE_METHODS]
ECG = [f"paper/{m}" for m in AGE_METHODS]


def cfg(name: str, *overrides: str):
    return load_train_config(name, list(overrides))


def test_every_profile_is_shipped_and_listed():
    listed = set(shipped_configs()["train"])
    assert set(AGE) | set(ECG) <= listed
    # the released code covers ages only: no released ECG profile
    assert not any(n.startswith("released/") for n in listed)


@pytest.mark.parametrize("name", AGE + ECG)
def test_every_profile_resolves(name):
    c = cfg(name)
    assert c.name == name.rsplit("/", 1)[-1]
    if name.endswith("dist_loss") or name.endswith("_dist") or name.endswith("balanced_mse"):
        assert c.init.declares_stage_2


@pytest.mark.parametrize("method", AGE_METHODS)
def test_ecg_paper_profile_is_the_paper_protocol(method):
    c, base = cfg(f"paper/{method}"), cfg(method)
    assert c == base
    assert c.epochs == 10 and c.batch_size == 512 and c.optim.weight_decay == 1e-5 and c.views == "noise"


@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("method", AGE_METHODS)
def test_weight_decay_and_last_batch(dataset, method):
    paper, released = cfg(f"age/paper/{dataset}/{method}"), cfg(f"age/released/{dataset}/{method}")
    assert paper.optim.weight_decay == 1e-4 and released.optim.weight_decay == 0.0
    assert paper.drop_last is True
    dist_code = method == "dist_loss" or method.endswith("_dist")
    assert released.drop_last is dist_code  # the baselines keep it; the Dist Loss code drops it
    assert released.head_bias_init == "default" and paper.head_bias_init == "train_mean"


@pytest.mark.parametrize("profile", PROFILES)
def test_ranksim_and_conr_recipes(profile):
    for name in (f"age/{profile}/agedb/ranksim", f"age/{profile}/agedb/conr", f"age/{profile}/imdb_wiki/conr"):
        c = cfg(name)
        assert (c.batch_size, c.optim.lr) == (64, 2.5e-4)
    assert cfg(f"age/{profile}/imdb_wiki/ranksim").batch_size == 256
    assert cfg("age/ranksim").batch_size == 256 and cfg("age/conr").optim.lr == 1e-3  # ecgka's, unchanged
    assert cfg(f"age/{profile}/agedb/conr").views == ("released" if profile == "released" else "noise")
    assert cfg(f"age/{profile}/agedb/conr_dist").optim.lr == 1e-3


@pytest.mark.parametrize("dataset", DATASETS)
def test_dist_loss_profiles(dataset):
    for method in ("dist_loss", "lds_dist", "conr_dist", "balanced_mse_dist"):
        paper, released = cfg(f"age/paper/{dataset}/{method}"), cfg(f"age/released/{dataset}/{method}")
        assert paper.method.dist_loss.base == "l2" and released.method.dist_loss.base == "l1"
        assert paper.selection_metric == "mae" and released.selection_metric == "balanced_mae"
        assert not paper.data.val_drop_last
        assert released.data.val_drop_last and released.data.eval_batch_size == 512
        assert paper.init.backbone == "eval" and released.init.backbone == "train"
        assert released.batch_size == 512 and paper.batch_size == 512


@pytest.mark.parametrize("dataset", DATASETS)
def test_balanced_mse_profiles(dataset):
    paper, released = cfg(f"age/paper/{dataset}/balanced_mse"), cfg(f"age/released/{dataset}/balanced_mse")
    assert (paper.epochs, paper.optim.lr, paper.selection_metric) == (90, 1e-3, "mae")
    assert (released.epochs, released.optim.lr, released.selection_metric) == (10, 1e-4, "balanced_mae")
    assert paper.optim.criterion_weight_decay is None and released.optim.criterion_weight_decay == 0.0
    assert released.init.backbone == "train" and released.head_bias_init == "default"
    sigma = 1.0 if dataset == "agedb" else 10.0
    assert paper.method.params.init_noise_sigma == released.method.params.init_noise_sigma == sigma


@pytest.mark.parametrize("dataset", DATASETS)
def test_fds_profiles(dataset):
    paper, released = cfg(f"age/paper/{dataset}/fds"), cfg(f"age/released/{dataset}/fds")
    assert paper.method.params.bucket_num is None and paper.method.params.statistics == "steps"
    assert released.method.params.bucket_num == 100 and released.method.params.statistics == "epoch_pass"
    start = 3 if dataset == "agedb" else 0
    assert paper.method.params.bucket_start == released.method.params.bucket_start == start


def test_ages_above_the_grid_profiles():
    assert cfg("age/paper/imdb_wiki/vanilla").data.image.train_ages_above_grid == "refuse"
    assert cfg("age/released/imdb_wiki/vanilla").data.image.train_ages_above_grid == "top_bin"


# ---- behaviour ------------------------------------------------------------------------------------------

def test_criterion_weight_decay_reaches_the_sigma_group():
    grid = LabelGrid.preset("age")
    labels = np.arange(0, 100, dtype=np.float64)
    model = create_model("resnet50", preset="tiny", in_channels=3, num_outputs=1)
    for override, expected in (([], 1e-4), (["optim.criterion_weight_decay=0"], 0.0)):
        c = cfg("age/paper/agedb/balanced_mse", *override)
        criterion = build_criterion(c.method, LossContext(labels, grid, 8))
        groups = build_optimizer(c, model, criterion).param_groups
        assert groups[0]["weight_decay"] == 1e-4
        assert groups[1]["name"] == "noise_sigma" and groups[1]["weight_decay"] == expected


def test_released_views_split_the_rows():
    grid = LabelGrid.preset("age")
    method = ConRMethod("l1", 4.0, 1, 0.07, 0.01, grid)
    assert use_released_views(method) and method.released_views
    torch.manual_seed(0)
    pred, feats = torch.randn(12) * 10 + 40, torch.randn(12, 5)
    target = torch.tensor([30.0, 31, 50, 51]).repeat(3)
    out = method(pred, target, features=feats)
    expected_sample = (pred[:4] - target[:4]).abs().mean()
    expected_conr = 4.0 * conr_loss(feats[4:], target[4:], pred[4:], w=1, t=0.07, e=0.01, grid=grid)
    assert torch.allclose(out["terms"]["sample"], expected_sample)
    assert torch.allclose(out["terms"]["conr"], expected_conr)


def test_released_views_are_refused_for_ecg():
    class Ecg:
        device_zscore = True

    c = cfg("conr", "views=released")
    method = ConRMethod("l2", 4.0, 1, 0.07, 0.01, LabelGrid.preset("age"))
    with pytest.raises(ConfigError, match="Gaussian noise"):
        training_views(c, method, Ecg())
    assert training_views(cfg("conr"), method, Ecg()) == 1


def test_drop_last_keeps_the_partial_batch():
    full = epoch_batches(10, 4, seed=0, epoch=0, drop_last=True)
    kept = epoch_batches(10, 4, seed=0, epoch=0, drop_last=False)
    assert [len(b) for b in full] == [4, 4] and [len(b) for b in kept] == [4, 4, 2]


# ---- end to end on the stand-in ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def standin(tmp_path_factory) -> Path:
    return make_standin(tmp_path_factory.mktemp("age") / "standin", n=200)


def _train(name: str, data: Path, out: Path, *overrides: str, init: Path | None = None) -> dict:
    from ecgka.training import train_run

    c = cfg(name, *TINY, *overrides)
    return train_run(c, data, out, init=init)


def test_loader_views_view0_is_the_plain_batch(standin):
    from ecgka.training.sources import open_split

    c = cfg("age/released/agedb/conr", *TINY)
    train = open_split(standin, "train", c)
    idx = np.arange(4)
    (plain, y0), = list(iterate_batches(train, [idx], prefetch=0, augment=(0, 0, 0)))
    (views, y1), = list(iterate_batches(train, [idx], prefetch=0, augment=(0, 0, 0), views=3))
    assert views.shape[0] == 12 and torch.equal(views[:4], plain) and torch.equal(y0, y1)
    assert not torch.equal(views[4:8], views[8:])
    x, y = augmented_views(train, idx, torch.Generator().manual_seed(1), (0, 0, 1))
    assert x.shape[0] == 12 and y.shape[0] == 4


def test_released_conr_and_fds_train(standin, tmp_path):
    info = _train("age/released/agedb/conr", standin, tmp_path / "conr", "batch_size=32", "optim.lr=1e-3")
    assert info["status"] == "complete"
    n_train = info["n_train"]
    assert n_train % 32  # the stand-in leaves a partial batch, which the released profile trains on
    from ecgka.catalog import RunDir

    (epoch,) = RunDir(tmp_path / "conr").read_log()
    assert epoch["samples"] == n_train  # drop_last: false
    info = _train("age/released/agedb/fds", standin, tmp_path / "fds", "epochs=2")
    assert info["status"] == "complete"
    state = torch.load(RunDir(tmp_path / "fds").checkpoint("last"), weights_only=True)
    fds = {k: v for k, v in state["criterion"].items() if k.startswith("fds.")}
    assert fds["fds.running_mean"].shape[0] == 100 - 3  # released bucket count (bucket_start 3)
    assert int(fds["fds.epoch"]) == 1  # statistics updated at the end of each epoch (the extra pass)
    _train("age/released/agedb/fds", standin, tmp_path / "fds_steps", "epochs=2", "method.params.statistics=steps")
    steps = torch.load(RunDir(tmp_path / "fds_steps").checkpoint("last"), weights_only=True)["criterion"]
    assert not torch.equal(steps["fds.running_mean"], fds["fds.running_mean"])  # another source of statistics


def test_released_checkpoint_loads_and_trains_stage_two(standin, tmp_path):
    """A state dict in the released layout (``state_dict`` entry, DataParallel ``module.``, head ``linear``,
    FDS buffers in the model) loads for --init and evaluation."""
    model = create_model("resnet50", preset="tiny", in_channels=3, num_outputs=1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
    released = {"module." + k.replace("fc.", "linear."): v for k, v in model.state_dict().items()}
    released["module.FDS.running_mean"] = torch.zeros(3, 4)
    file = tmp_path / "ckpt.pth.tar"
    torch.save({"epoch": 90, "state_dict": released, "best_loss": 7.5}, file)
    fresh = create_model("resnet50", preset="tiny", in_channels=3, num_outputs=1)
    load_init(fresh, file)
    for key, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    assert "linear.weight" not in fresh.state_dict() and "fc.weight" in fresh.state_dict()
    info = _train("age/released/agedb/dist_loss", standin, tmp_path / "dl", "batch_size=32",
                  "data.eval_batch_size=16", init=file)
    assert info["status"] == "complete" and info["stage"] == 2 and info["selection_metric"] == "balanced_mae"


def test_val_drop_last_scores_whole_batches(standin, tmp_path):
    from ecgka.catalog import RunDir

    runs = {}
    for flag in ("false", "true"):
        _train("age/paper/agedb/vanilla", standin, tmp_path / flag, "data.eval_batch_size=7",
               f"data.val_drop_last={flag}", "seed=3")
        (epoch,) = RunDir(tmp_path / flag).read_log()
        runs[flag] = epoch["val"]["mae"]
    assert math.isfinite(runs["true"]) and runs["true"] != runs["false"]


# ---- IMDB-WIKI preparation rules and ages above the grid ------------------------------------------------

def _write_mat(path: Path, key: str, rows: list[tuple]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    full_path = np.empty((1, len(rows)), dtype=object)
    for k, row in enumerate(rows):
        full_path[0, k] = np.array([row[0]])
    savemat(path, {key: {"full_path": full_path,
                         "dob": np.array([[r[1] for r in rows]], dtype=float),
                         "photo_taken": np.array([[r[2] for r in rows]], dtype=np.uint16),
                         "face_score": np.array([[r[3] for r in rows]], dtype=float),
                         "second_face_score": np.array([[r[4] for r in rows]], dtype=float)}})


def test_imdb_wiki_released_rules(tmp_path):
    from ecgka.age.metadata import imdb_wiki_metadata
    from ecgka.age.prepare import prepare_split

    born = float(dt.date(1900, 6, 30).toordinal() + 366)
    nan = float("nan")
    _write_mat(tmp_path / "imdb_crop" / "imdb.mat", "imdb", [
        ("01/a.jpg", born, 1930, 2.0, nan),   # 30
        ("01/b.jpg", born, 1930, nan, nan),   # NaN face score: released keeps it
        ("01/c.jpg", born, 2050, 2.0, nan),   # 150: released train, ecgka no split
        ("01/d.jpg", born, 1930, 0.5, nan),   # below 1: out in both
    ])
    _write_mat(tmp_path / "wiki_crop" / "wiki.mat", "wiki", [("02/e.jpg", born, 1940, 1.0, nan)])
    assert imdb_wiki_metadata(tmp_path)["path"].str[-5:].tolist() == ["a.jpg", "c.jpg", "e.jpg"]
    assert imdb_wiki_metadata(tmp_path, rules="released")["path"].str[-5:].tolist() == \
        ["a.jpg", "b.jpg", "c.jpg", "e.jpg"]
    with pytest.raises(InputError, match="valid are ecgka, released"):
        imdb_wiki_metadata(tmp_path, rules="paper")
    ours = prepare_split("imdb-wiki", tmp_path / "ours.csv", images=tmp_path)
    theirs = prepare_split("imdb-wiki", tmp_path / "theirs.csv", images=tmp_path, rules="released")
    assert (ours["train"], ours["no_split"]) == (2, 1) and (theirs["train"], theirs["no_split"]) == (4, 0)
    table = pd.read_csv(tmp_path / "theirs.csv")
    assert table.loc[table["age"] == 150, "split"].tolist() == ["train"]


def test_training_ages_above_the_grid(standin, tmp_path):
    from ecgka.training.sources import describe_dataset

    table = pd.read_csv(standin)
    first = table.index[table["split"] == "train"][0]
    table.loc[first, "age"] = 150
    csv = standin.parent / "above.csv"
    table.to_csv(csv, index=False)
    with pytest.raises(InputError, match="150 lies outside the label grid"):
        describe_dataset(csv, cfg("age/paper/imdb_wiki/vanilla"))
    desc = describe_dataset(csv, cfg("age/released/imdb_wiki/vanilla"))
    ages = np.minimum(table.loc[table["split"] == "train", "age"].to_numpy(), 120)
    assert list(desc.train_bins.counts) == np.bincount(ages, minlength=121).tolist()
    info = _train("age/released/imdb_wiki/vanilla", csv, tmp_path / "run")
    assert info["status"] == "complete"


@pytest.mark.slow
def test_every_profile_resolves_with_run_check(tmp_path):
    """``ecgka run --check`` resolves and validates a job that trains every shipped profile (stage 2 ones
    from their stage 1), without training anything."""
    import subprocess
    import sys

    from ecgka.config import dump_yaml

    def stage(name: str, data: str) -> dict:
        sid = name.replace("/", "_")
        out = {"id": sid, "kind": "train", "config": name, "data": data}
        if cfg(name).init.declares_stage_2:
            out["init"] = "${vanilla_" + name.rsplit("/", 2)[-2] + "}" if name.startswith("age/") else "${paper_vanilla}"
        return out

    stages = [{"id": "standin", "kind": "synth", "subjects": 20}, {"id": "ages", "kind": "synth_age", "n": 50},
              {"id": "dataset", "kind": "build", "ecg_root": "${standin}/ecg", "labs": ["${standin}/hosp/labevents.csv.gz"]}]
    for d in DATASETS:  # each dataset's stage 1 under a short name for the stage 2 references
        stages.append({"id": f"vanilla_{d}", "kind": "train", "config": f"age/paper/{d}/vanilla",
                       "data": "${ages}/age_dir.csv"})
    stages += [stage(n, "${ages}/age_dir.csv") for n in AGE] + [stage(n, "${dataset}") for n in ECG]
    pipeline = tmp_path / "profiles.yaml"
    pipeline.write_text(dump_yaml({"name": "profiles", "stages": stages}))
    result = subprocess.run([sys.executable, "-m", "ecgka", "run", str(pipeline), "--out", str(tmp_path / "out"),
                             "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert not (tmp_path / "out").exists()
