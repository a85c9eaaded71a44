"""The shipped configs and pipelines (``ecgka.resources``): one resolver of names and paths, package data."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from ecgka.errors import ConfigError
from ecgka.pipeline.spec import resolve_files
from ecgka.release.gate import DEFAULT_GATE, gate_path
from ecgka.resources import (
    CONFIGS,
    PIPELINES,
    RESOURCES,
    find_config,
    find_pipeline,
    shipped_configs,
    shipped_file,
    shipped_pipelines,
)
from ecgka.training import load_train_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """A working directory outside the repository."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_names_and_repository_paths_resolve_from_any_folder(elsewhere):
    vanilla = CONFIGS / "train" / "vanilla.yaml"
    for spelling in ("vanilla", "vanilla.yaml", "train/vanilla", "configs/train/vanilla.yaml"):
        assert find_config(spelling, "train") == vanilla, spelling
    assert find_config("age/dist_loss", "train") == CONFIGS / "train" / "age" / "dist_loss.yaml"
    assert find_config("ecg_ka_dir", "data") == CONFIGS / "data" / "ecg_ka_dir.yaml"
    assert find_config("configs/gate/default.yaml", "gate") == DEFAULT_GATE == gate_path("default")
    for spelling in ("retrain", "retrain.yaml", "pipelines/retrain.yaml"):
        assert find_pipeline(spelling) == PIPELINES / "retrain.yaml"
    cfg = load_train_config("age/dist_loss", ["epochs=1"])  # `extends:` is read beside the shipped file
    assert cfg.method.name == "dist_loss" and cfg.epochs == 1


def test_a_path_is_still_a_path(elsewhere):
    (elsewhere / "vanilla.yaml").write_text("extends: " + str(CONFIGS / "train" / "vanilla.yaml") + "\nepochs: 2\n")
    assert find_config("vanilla.yaml", "train") == Path("vanilla.yaml")  # the user's file wins
    assert load_train_config("vanilla.yaml").epochs == 2
    assert find_config("vanilla", "train") == CONFIGS / "train" / "vanilla.yaml"  # a name is no file here
    (elsewhere / "mine.yaml").write_text("name: mine\nstages: []\n")
    assert find_pipeline("mine.yaml") == Path("mine.yaml")


def test_an_unknown_name_is_one_line_with_the_closest_names(elsewhere):
    with pytest.raises(ConfigError) as err:
        find_config("vanila", "train")
    text = str(err.value)
    assert "\n" not in text and "did you mean vanilla" in text and "ecgka configs" in text
    with pytest.raises(ConfigError, match=r"retrian: no such file, nor a shipped pipeline; did you mean retrain"):
        find_pipeline("retrian")
    with pytest.raises(ConfigError, match="nor a shipped train config"):
        find_config("../../pyproject", "train")  # names stay inside the shipped files
    with pytest.raises(ConfigError, match="nor a shipped gate config"):
        find_config("vanilla", "gate")  # kinds do not mix


def test_listings_are_the_shipped_files():
    listed = shipped_configs()
    assert {"vanilla", "dist_loss", "age/dist_loss"} <= set(listed["train"]) and "_paper" not in listed["train"]
    assert listed["gate"] == ["default"] and listed["data"] == ["ecg_ka_dir"]
    assert {"smoke", "retrain", "demo"} <= set(shipped_pipelines())
    assert all((CONFIGS / k / f"{n}.yaml").is_file() for k, names in listed.items() for n in names)


def test_stage_file_options_name_shipped_files_from_any_folder(elsewhere):
    """Before: only ``config:`` was taken from the project folder; ``gate:`` failed outside the repository."""
    options = {"config": "configs/train/vanilla.yaml", "gate": "configs/gate/default.yaml",
               "data": "/abs/data", "registry": "registry", "datasets": ["configs/data/ecg_ka_dir.yaml", ""]}
    out = resolve_files(options, elsewhere)
    assert out["config"] == str(CONFIGS / "train" / "vanilla.yaml") and out["gate"] == str(DEFAULT_GATE)
    assert out["data"] == "/abs/data" and out["registry"] == "registry"  # not shipped: as written
    assert out["datasets"] == [str(CONFIGS / "data" / "ecg_ka_dir.yaml"), ""]
    assert shipped_file("pipelines/smoke.yaml") == PIPELINES / "smoke.yaml" and shipped_file("nothing.yaml") is None


def test_the_repository_keeps_its_layout_as_links_to_the_package_data():
    for name in ("configs", "pipelines"):
        link = REPO / name
        assert link.is_symlink() and link.resolve() == RESOURCES / name
    if (REPO / ".git").exists():
        staged = subprocess.run(["git", "ls-files", "-s", "configs", "pipelines"], cwd=REPO, capture_output=True,
                                text=True).stdout.split("\n")
        modes = {line.split("\t")[1]: line.split()[0] for line in staged if line}
        assert modes == {"configs": "120000", "pipelines": "120000"}  # git records links, not copies
    line = next(x for x in (REPO / "pyproject.toml").read_text().splitlines() if x.startswith('"ecgka.resources" = '))
    assert {"configs/**/*.yaml", "pipelines/*.yaml", "clusters/*.yaml"} <= set(re.findall(r'"([^"]+\.yaml)"', line))


@pytest.mark.slow
def test_a_wheel_carries_every_shipped_file(tmp_path):
    """The package data of pyproject.toml: every shipped config and pipeline is in the wheel."""
    import sys
    import zipfile

    if not (REPO / ".git").exists():
        pytest.skip("needs the git checkout (git archive gives the committed tree, links included)")
    src = tmp_path / "src"
    src.mkdir()
    archive = subprocess.run(["git", "archive", "HEAD"], cwd=REPO, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path / "dist")], cwd=src, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    names = set(zipfile.ZipFile(next((tmp_path / "dist").glob("*.whl"))).namelist())
    shipped = {f"ecgka/resources/{p.relative_to(RESOURCES).as_posix()}" for p in RESOURCES.rglob("*.yaml")}
    assert shipped and shipped <= names
