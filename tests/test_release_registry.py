"""The model registry, its aliases and log, and the promotion gate (promoting and refusing, both forced)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from shard_factory import write_dataset

from ecgka.catalog import RegistryDir
from ecgka.errors import InputError
from ecgka.evaluation import EvalConfig, evaluate_run
from ecgka.release.gate import GateConfig, apply_gate
from ecgka.release.promote import promote
from ecgka.release.registry import ModelRegistry, resolve_model
from ecgka.training import load_train_config, train_run

REPO = Path(__file__).resolve().parents[1]
FAST = ["model.preset=tiny", "batch_size=32", "progress=false", "threads=1", "epochs=1"]
EVAL = EvalConfig(n_boot=200)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two tiny runs on one dataset, each evaluated on its test split."""
    root = tmp_path_factory.mktemp("reg")
    data = write_dataset(root / "ds", n_train=96, n_val=48, n_test=48, n_samples=200, leads=("II",), shard_rows=48)
    out = {}
    for seed in (0, 1):
        run = root / f"run{seed}"
        train_run(load_train_config(None, [*FAST, f"seed={seed}", f"name=r{seed}"]), data, run)
        evaluate_run(run, data, "test", EVAL)
        out[seed] = run
    return data, out


def _rule(metric: str, better: bool, change: float) -> dict:
    return {"metric": metric, "greater_is_better": better, "min_absolute_change": change}


def test_gate_rules_on_constructed_metrics():
    base = {"regression": {"few": {"mae": 0.50}}, "clinical": {"conditions": {"hyper": {"operating_point": {
        "test": {"sensitivity": 0.90}}}}}}
    cand = {"regression": {"few": {"mae": 0.53}}, "clinical": {"conditions": {"hyper": {"operating_point": {
        "test": {"sensitivity": 0.85}}}}}}
    sens = "clinical.conditions.hyper.operating_point.test.sensitivity"
    cfg = GateConfig(rules=[_rule("regression.few.mae", False, -0.05), _rule(sens, True, -0.02)])
    decision = apply_gate(cfg, base, cand)
    assert not decision["promote"]
    mae, hyper = decision["rules"]
    assert mae["passed"] and mae["gain"] == pytest.approx(-0.03)
    assert not hyper["passed"] and "short by 0.03" in hyper["reasons"][0]
    assert decision["failed"] == [f"{sens}: {hyper['reasons'][0]}"]
    relative = GateConfig(rules=[{"metric": "regression.few.mae", "greater_is_better": False,
                                  "min_relative_change": -0.1}])
    assert apply_gate(relative, base, cand)["promote"]  # 6 % worse, 10 % tolerated
    missing = apply_gate(cfg, base, {"regression": {"few": {"mae": None}}})
    assert not missing["promote"] and "undefined for the challenger" in missing["failed"][0]


def test_register_aliases_log_and_gate_both_ways(runs, tmp_path):
    data, run = runs
    reg_dir = tmp_path / "registry"
    reg = ModelRegistry(reg_dir)
    v1 = reg.register(run[0])
    assert v1 == "v0001" and reg.register(run[0]) == "v0001"  # the same run and checkpoint: not twice
    first = promote(reg_dir, "v1")
    assert first["promote"] and reg.aliases() == {"champion": "v0001"}
    v2 = reg.register(run[1])
    assert reg.record(v2)["parent"] == "v0001"
    refuse = GateConfig(rules=[_rule("regression.all.mae", False, 10.0)], n_boot=200)  # an impossible gain
    decision = promote(reg_dir, v2, refuse)
    assert not decision["promote"] and "regression.all.mae" in decision["failed"][0]
    assert reg.aliases() == {"champion": "v0001", "challenger": "v0002"}
    accept = GateConfig(rules=[{**_rule("regression.all.mae", False, -10.0), "ci_excludes_loss": True}], n_boot=200)
    decision = promote(reg_dir, "challenger", accept)
    assert decision["promote"] and decision["rules"][0]["ci"]["n_valid"] == 200
    assert reg.aliases()["champion"] == "v0002"
    events = [e["event"] for e in reg.read_log()]
    assert events.count("register") == 2 and "refuse" in events and events.count("promote") == 2
    refused = next(e for e in reg.read_log() if e["event"] == "refuse")
    assert refused["champion"] == "v0001" and "minimum absolute change" in refused["failed"][0]
    # plain files: the record, the export and its card are readable without ecgka
    record = json.loads((reg_dir / "versions" / "v0002" / "model.json").read_text())
    assert record["dataset"]["fingerprint"] and record["metrics"]["split"] == "test"
    assert (RegistryDir(reg_dir).export_dir("v0002").card_path).is_file()
    # the registry's own frozen copies, never the origin run folders
    assert resolve_model(f"{reg_dir}@champion")[0] == RegistryDir(reg_dir).run_dir("v0002")
    assert resolve_model(f"{reg_dir}@v1")[0] == RegistryDir(reg_dir).run_dir("v0001")
    assert record["run"]["path"] == str(Path(run[1]).resolve())  # the origin: informational
    with pytest.raises(InputError, match="no model version"):
        resolve_model(f"{reg_dir}@v9")


@pytest.mark.slow
def test_registry_cli(runs, tmp_path):
    data, run = runs
    reg = tmp_path / "registry"

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "ecgka", "registry", *args], cwd=REPO, capture_output=True,
                              text=True)

    assert cli("register", str(reg), str(run[0])).returncode == 0
    assert cli("promote", f"{reg}@v1").returncode == 2  # no champion: a new registry must be said explicitly
    out = cli("promote", f"{reg}@v1", "--new-registry")
    assert out.returncode == 0 and "champion" in out.stdout
    listed = cli("list", str(reg))
    assert "v0001" in listed.stdout and "champion" in listed.stdout
    shown = cli("show", f"{reg}@champion")
    assert json.loads(shown.stdout)["version"] == "v0001"
    bad = cli("show", f"{reg}@v7")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
