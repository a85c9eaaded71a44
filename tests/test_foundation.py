"""The shared machinery: name tables, typed configs with overrides, atomic writes, the CLI dispatcher."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from ecgka.cli import COMMANDS, main
from ecgka.config import ConfigModel, apply_overrides, config_hash, load_config, load_validated, read_yaml
from ecgka.errors import ConfigError
from ecgka.io import atomic_path, atomic_write_json, file_fingerprint, read_json
from ecgka.names import NameTable, look_up_option


class Inner(ConfigModel):
    epochs: int = 10
    lr: float = 1e-3


class Outer(ConfigModel):
    name: str = "x"
    train: Inner = Inner()


def test_name_table_suggests_closest_names():
    reg: NameTable = NameTable("loss")
    reg.register("dist_loss")(object)
    reg.register("balanced_mse")(object)
    assert reg.get("dist_loss") is object
    with pytest.raises(ConfigError, match=r"unknown loss 'dist_los'; did you mean 'dist_loss'\?"):
        reg.get("dist_los")
    with pytest.raises(ValueError):
        reg.register("dist_loss")(object)
    assert look_up_option("a", ["a", "b"]) == "a"


def test_overrides_are_typed_and_validated(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: run\ntrain:\n  epochs: 3\n")
    cfg = load_config(Outer, path, ["train.lr=0.01", "name=other"])
    assert cfg.train.epochs == 3 and cfg.train.lr == 0.01 and cfg.name == "other"
    with pytest.raises(ConfigError, match=r"train\.epochs"):
        load_config(Outer, path, ["train.epochs=many"])
    with pytest.raises(ConfigError, match=r"train\.momentum"):
        load_config(Outer, path, ["train.momentum=0.9"])
    with pytest.raises(ConfigError, match="not of the form key=value"):
        load_config(Outer, path, ["epochs"])
    assert apply_overrides({"a": {"b": 1}}, ["a.c=[1, 2]"]) == {"a": {"b": 1, "c": [1, 2]}}
    assert config_hash(cfg) == config_hash(cfg.model_copy()) != config_hash(Outer())


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["batchsize=3"], "command line: batchsize=3: unknown key 'batchsize'; did you mean 'batch_size'?"),
        (["lr=0.1"], "command line: lr=0.1: unknown key 'lr'; did you mean 'optim.lr'?"),
        (["optim_lr=0.1"], "command line: optim_lr=0.1: unknown key 'optim_lr'; did you mean 'optim.lr'?"),
        (["optim.lrr=0.1"], "command line: optim.lrr=0.1: unknown key 'lrr'; did you mean 'optim.lr'?"),
        (["epochs=abc"], "command line: epochs=abc: Input should be a valid integer"),
        (["seed=1", "epochs.x=1"], "command line: epochs.x=1: epochs: Input should be a valid integer"),
        (["optim={lr: abc}"], "command line: optim={lr: abc}: optim.lr: Input should be a valid number"),
    ],
)
def test_override_errors_name_the_command_line_and_the_nearest_key(overrides, message):
    """An error in a typed override names the override, not the file, and the nearest key of the whole
    config (also one at another level)."""
    from ecgka.training.config import TrainConfig

    with pytest.raises(ConfigError) as info:
        load_validated(TrainConfig, {"epochs": 2}, overrides, source="configs/train/x.yaml")
    assert str(info.value).startswith(message)


def test_file_errors_still_name_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: run\ntrain:\n  epochs: many\n")
    with pytest.raises(ConfigError, match=rf"^{path}: train\.epochs: Input should be a valid integer"):
        load_config(Outer, path, ["name=x"])
    with pytest.raises(ConfigError, match=r"^pipeline overrides: train\.lr=x: "):
        load_config(Outer, None, ["train.lr=x"], override_source="pipeline overrides")
    with pytest.raises(ConfigError, match=r"^config: nme: unknown key 'nme'; did you mean 'name'\?"):
        load_validated(Outer, {"nme": 1})
    with pytest.raises(ConfigError, match=r"unknown key 'zzz' \(valid: name, train\)"):
        load_validated(Outer, {"zzz": 1})


def test_errors_across_keys_name_whoever_broke_them():
    """A check across keys (a model validator) blames the overrides only when the file alone passes it."""
    from pydantic import model_validator

    class Schedule(ConfigModel):
        epochs: int = 10
        milestones: list[int] = [5, 8]

        @model_validator(mode="after")
        def _inside(self):
            if any(m >= self.epochs for m in self.milestones):
                raise ValueError("milestones must be below epochs")
            return self

    with pytest.raises(ConfigError, match=r"^command line: epochs=3: milestones must be below epochs$"):
        load_validated(Schedule, {"epochs": 10}, ["epochs=3"], source="f.yaml")
    with pytest.raises(ConfigError, match=r"^f\.yaml: milestones must be below epochs$"):
        load_validated(Schedule, {"epochs": 3}, ["milestones=[5]"], source="f.yaml")


def test_yaml_errors_name_line_and_column(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: run\ntrain:\n  epochs: [3\n")
    with pytest.raises(ConfigError, match=rf"^{path}: line 4, column 1: not valid YAML \(expected ',' or '\]'"):
        read_yaml(path)


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    atomic_write_json(target, {"a": 1})
    assert read_json(target) == {"a": 1}
    fp = file_fingerprint(target)
    assert fp["size"] == target.stat().st_size and len(fp["sha256"]) == 64


def test_atomic_directory_replaces_whole(tmp_path):
    target = tmp_path / "shards"
    for content in ("one", "two"):
        with atomic_path(target) as tmp:
            tmp.mkdir()
            (tmp / "part.txt").write_text(content)
    assert (target / "part.txt").read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shards"]


def test_cli_unknown_command_is_one_line(capsys):
    assert main(["trian"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "did you mean 'train'" in err
    assert main(["--help"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in COMMANDS)


def test_torchsort_soft_sort_runs_after_setup():
    """The set-up builds torchsort against the installed torch; its soft sort must run and be exact here."""
    import torch
    import torchsort

    x = torch.tensor([[4.2, 3.9, 5.1, 4.0]], dtype=torch.float64, requires_grad=True)
    y = torchsort.soft_sort(x, regularization="l2", regularization_strength=0.1)
    assert torch.allclose(y, torch.sort(x).values)
    y.sum().backward()
    assert torch.allclose(x.grad, torch.ones_like(x))


def test_module_entry_point():
    out = subprocess.run([sys.executable, "-m", "ecgka", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("ecgka ")


PACKAGE = Path(__file__).resolve().parents[1] / "ecgka"


def _ecgka_imports(folder: Path) -> dict[str, set[str]]:
    """Every ``ecgka.*`` module imported by each file under ``folder`` (imports inside functions too)."""
    found: dict[str, set[str]] = {}
    for path in sorted(folder.rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{path}: relative import"
                names.add(node.module or "")
        found[str(path.relative_to(PACKAGE.parent))] = {n for n in names if n.split(".")[0] == "ecgka"}
    return found


def test_standin_is_its_own_package():
    """The stand-in writes raw MIMIC-format inputs: it imports nothing from the build, nor the build from it."""
    standin = _ecgka_imports(PACKAGE / "standin")
    assert len(standin) >= 9
    allowed = ("ecgka.standin", "ecgka.errors", "ecgka.io", "ecgka.processes", "ecgka.catalog")  # catalog: its folder marker
    outside = {f: sorted(n for n in names if not n.startswith(allowed)) for f, names in standin.items()}
    assert all(not names for names in outside.values()), outside
    data = _ecgka_imports(PACKAGE / "data")
    assert data and not {f: n for f, n in data.items() if any(m.startswith("ecgka.standin") for m in n)}
