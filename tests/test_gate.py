"""The promotion gate cannot be fooled (issue 18): the gate file is validated when loaded (no overrides, no
empty rules, test split, a minimum n_boot, known metric paths, floors and min_n), the gate evaluates the
registry's copies (never stale metrics, never a model against itself, never on its training subjects), a
promotion decides first and writes under the lock (concurrent promotes stay consistent), a refusal exits 3."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from shard_factory import write_dataset

from ecgka.catalog import DatasetDir, RunDir
from ecgka.errors import ConfigError, InputError
from ecgka.evaluation import EvalConfig, evaluate_run
from ecgka.release.gate import MIN_N_BOOT, GateConfig, apply_gate, load_gate
from ecgka.release.promote import GATE_REFUSED_EXIT, promote
from ecgka.release.registry import ModelRegistry
from ecgka.training import load_train_config, train_run

pytestmark = pytest.mark.slow  # end to end: `make test` runs it, `make test-fast` skips it

REPO = Path(__file__).resolve().parents[1]
FAST = ["model.preset=tiny", "batch_size=32", "progress=false", "threads=1", "epochs=1"]
MAE = "regression.few.mae"
SENS = "clinical.conditions.hyper.operating_point.test.sensitivity"


def _gate_file(path: Path, **changes) -> Path:
    gate = {"split": "test", "n_boot": MIN_N_BOOT, "seed": 0,
            "rules": [{"metric": "regression.all.mae", "greater_is_better": False, "min_absolute_change": -10.0}]}
    gate.update(changes)
    path.write_text(yaml.safe_dump(gate))
    return path


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ecgka", *args], cwd=REPO, capture_output=True, text=True)


# ---- the gate file -------------------------------------------------------------------------------------------------


def test_gate_file_is_refused_when_it_cannot_decide(tmp_path):
    with pytest.raises(ConfigError, match="rules"):
        load_gate(_gate_file(tmp_path / "empty.yaml", rules=[]))
    with pytest.raises(ConfigError, match="test split only"):
        load_gate(_gate_file(tmp_path / "val.yaml", split="val"))
    with pytest.raises(ConfigError, match="n_boot"):
        load_gate(_gate_file(tmp_path / "few.yaml", n_boot=MIN_N_BOOT - 1))
    typo = [{"metric": "regression.few.mea", "greater_is_better": False, "min_absolute_change": 0}]
    with pytest.raises(ConfigError, match="did you mean .*'regression.few.mae'"):
        load_gate(_gate_file(tmp_path / "typo.yaml", rules=typo))
    assert load_gate().n_boot >= MIN_N_BOOT  # the shipped default gate loads


def test_no_gate_overrides_on_the_command_line():
    out = _cli("registry", "promote", "REG@v1", "rules=[]")
    assert out.returncode == 2 and "unrecognized arguments: rules=[]" in out.stderr


def test_run_check_finds_an_unknown_metric_and_a_wrong_registry(tmp_path):
    (tmp_path / "ecg").mkdir()
    (tmp_path / "labs.csv").write_text("")
    typo = [{"metric": "clinical.conditions.hyper.auroc_", "greater_is_better": True, "min_absolute_change": 0}]
    gate = _gate_file(tmp_path / "typo.yaml", rules=typo)
    base = ["run", "pipelines/retrain.yaml", "--check", "--out", str(tmp_path / "out"), "--set",
            f"ecg_root={tmp_path / 'ecg'}", f"labs={tmp_path / 'labs.csv'}"]
    out = _cli(*base, f"registry={tmp_path / 'reg'}", "new_registry=true", f"gate={gate}")
    assert out.returncode == 2 and "did you mean 'clinical.conditions.hyper.auroc'" in out.stderr
    # a typo in the registry path with no new_registry: refused before anything is trained
    out = _cli(*base, f"registry={tmp_path / 'regsitry'}")
    assert out.returncode == 2 and "has no champion" in out.stderr and "new_registry" in out.stderr
    # a dataset given as the registry, and a registry given as `previous`
    data = write_dataset(tmp_path / "ds", n_train=8, n_val=4, n_test=4, n_samples=50)
    out = _cli(*base, f"registry={data}", "new_registry=true")
    assert out.returncode == 2 and "is a dataset folder, not a model registry" in out.stderr
    (tmp_path / "notds").mkdir()
    out = _cli(*base, f"registry={tmp_path / 'reg'}", "new_registry=true", f"previous={tmp_path / 'notds'}")
    assert out.returncode == 2 and "manifest" in out.stderr
    assert not (tmp_path / "out").exists()


def test_floors_and_min_n_of_the_default_gate():
    def metrics(sens: float, positives: int, few_mae: float, few_n: int) -> dict:
        tp = round(sens * positives)
        return {"regression": {"few": {"mae": few_mae, "n": few_n}},
                "clinical": {"conditions": {"hyper": {"operating_point": {"test": {
                    "sensitivity": sens, "tp": tp, "fn": positives - tp}}}}}}

    gate = load_gate()
    zero = apply_gate(gate, metrics(0.0, 40, 0.5, 100), metrics(0.0, 40, 0.5, 100))
    assert not zero["promote"] and any("below the threshold" in f for f in zero["failed"])  # equal, but useless
    tiny = apply_gate(gate, metrics(0.9, 40, 0.5, 3), metrics(0.9, 40, 0.4, 3))
    assert not tiny["promote"] and any(f.startswith(MAE) and "3 case(s)" in f for f in tiny["failed"])
    good = apply_gate(gate, metrics(0.9, 40, 0.5, 100), metrics(0.9, 40, 0.5, 100))
    assert good["promote"] and [r["n"] for r in good["rules"]] == [100, 40]
    lower = GateConfig(rules=[{"metric": MAE, "greater_is_better": False, "threshold": 0.45}])
    assert not apply_gate(lower, metrics(0.9, 40, 0.5, 100), metrics(0.9, 40, 0.5, 100))["promote"]


# ---- the gate against a registry -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three tiny runs on one dataset, each evaluated on its test split."""
    root = tmp_path_factory.mktemp("gate")
    data = write_dataset(root / "ds", n_train=96, n_val=48, n_test=48, n_samples=200, leads=("II",), shard_rows=48)
    out = []
    for seed in (0, 1, 2):
        run = root / f"run{seed}"
        train_run(load_train_config(None, [*FAST, f"seed={seed}", f"name=r{seed}"]), data, run)
        evaluate_run(run, data, "test", EvalConfig(n_boot=20))
        out.append(run)
    return data, out


@pytest.fixture
def registry(runs, tmp_path):
    """v0001 champion (run 0), v0002 and v0003 registered (runs 1 and 2)."""
    data, run = runs
    reg = ModelRegistry(tmp_path / "registry")
    for r in run:
        reg.register(r)
    promote(reg.path, "v1")
    return reg


def _state(reg: ModelRegistry) -> tuple[dict, int]:
    return reg.aliases(), len(reg.read_log())


def test_same_weights_are_never_gated_against_each_other(runs, registry, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(runs[1][0], copy)  # the champion's run, elsewhere: the same weights
    same = registry.register(copy)
    before = _state(registry)
    with pytest.raises(InputError, match="never gated against itself"):
        promote(registry.path, same, _gate_file(tmp_path / "g.yaml"))
    assert _state(registry) == before  # an error: no alias change, no log event


def test_stale_metrics_of_the_run_folder_are_never_read(runs, registry, tmp_path):
    metrics_path = RunDir(runs[1][1]).metrics_path("test")
    metrics = json.loads(metrics_path.read_text())
    real = metrics["regression"]["all"]["mae"]
    metrics["regression"]["all"]["mae"] = 0.0  # metrics of other weights (or edited): must not count
    metrics_path.write_text(json.dumps(metrics))
    try:
        decision = promote(registry.path, "v2", _gate_file(tmp_path / "g.yaml"))
    finally:
        metrics["regression"]["all"]["mae"] = real
        metrics_path.write_text(json.dumps(metrics))
    rule = decision["rules"][0]
    assert rule["challenger"] == pytest.approx(real, rel=1e-6)
    event = registry.read_log()[-1]
    assert event["models"]["challenger"] == registry.record("v0002")["run"]["checkpoint_sha256"]
    assert event["models"]["champion"] == registry.record("v0001")["run"]["checkpoint_sha256"]
    assert event["gate"]["sha256"] and event["dataset"]["digest"] and event["rules"][0]["challenger"] is not None


def test_a_gate_dataset_with_training_subjects_is_refused(runs, registry, tmp_path):
    data = runs[0]
    leaky = tmp_path / "leaky"
    shutil.copytree(data, leaky)
    shutil.rmtree(DatasetDir(leaky).split_dir("test"))
    shutil.copytree(DatasetDir(data).split_dir("train"), DatasetDir(leaky).split_dir("test"))
    before = _state(registry)
    out = _cli("registry", "promote", f"{registry.path}@v2", "--gate", str(_gate_file(tmp_path / "g.yaml")),
               "--data", str(leaky))
    assert out.returncode == 2 and "shares 48 subject(s)" in out.stderr and "champion v0001" in out.stderr
    assert _state(registry) == before


def test_a_refusal_exits_3(registry, tmp_path):
    refuse = _gate_file(tmp_path / "r.yaml", rules=[{"metric": "regression.all.mae", "greater_is_better": False,
                                                     "min_absolute_change": 10.0}])
    out = _cli("registry", "promote", f"{registry.path}@v2", "--gate", str(refuse))
    assert out.returncode == GATE_REFUSED_EXIT == 3, out.stderr
    assert "refused" in out.stdout and registry.aliases()["champion"] == "v0001"


def test_concurrent_promotes_leave_a_consistent_champion_and_log(registry, tmp_path):
    gate = str(_gate_file(tmp_path / "g.yaml"))  # accepts any challenger
    procs = [subprocess.Popen([sys.executable, "-m", "ecgka", "registry", "promote", f"{registry.path}@{v}",
                               "--gate", gate], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for v in ("v2", "v3")]
    codes = [p.wait(timeout=600) for p in procs]
    assert set(codes) <= {0, GATE_REFUSED_EXIT}, [p.stderr.read() for p in procs]
    champion = "v0001"
    for event in registry.read_log():
        if event["event"] == "promote" and event.get("previous"):
            assert event["previous"] == champion  # each promotion was gated against the champion of its time
            champion = event["version"]
    assert registry.aliases()["champion"] == champion != "v0001"
    promoted_from_v1 = [e for e in registry.read_log() if e["event"] == "promote" and e.get("previous") == "v0001"]
    assert len(promoted_from_v1) == 1
