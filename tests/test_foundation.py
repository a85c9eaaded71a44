"""The shared machinery: registries, typed configs with overrides, atomic writes, the CLI dispatcher."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from ecgka.cli import COMMANDS, main
from ecgka.config import ConfigModel, apply_overrides, config_hash, load_config
from ecgka.errors import ConfigError
from ecgka.io import atomic_path, atomic_write_json, file_fingerprint, read_json
from ecgka.registry import Registry, look_up_option


class Inner(ConfigModel):
    epochs: int = 10
    lr: float = 1e-3


class Outer(ConfigModel):
    name: str = "x"
    train: Inner = Inner()


def test_registry_suggests_closest_names():
    reg: Registry = Registry("loss")
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
    allowed = ("ecgka.standin", "ecgka.errors", "ecgka.io")
    outside = {f: sorted(n for n in names if not n.startswith(allowed)) for f, names in standin.items()}
    assert all(not names for names in outside.values()), outside
    data = _ecgka_imports(PACKAGE / "data")
    assert data and not {f: n for f, n in data.items() if any(m.startswith("ecgka.standin") for m in n)}
