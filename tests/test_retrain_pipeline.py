"""``pipelines/retrain.yaml`` end to end: the first version (no champion: registered and promoted), the same
run again (every stage skipped), then a second version built with ``previous`` on a second export."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from ecgka.catalog import ComparisonDir
from ecgka.release.registry import ModelRegistry

pytestmark = pytest.mark.slow  # end to end: `make test` runs it, `make test-fast` skips it

REPO = Path(__file__).resolve().parents[1]
SMALL = ["epochs=1", "batch_size=32", "preset=tiny", "per_bin_cap=3", "workers=1"]
# a gate file decides on tiny data (the default gate's min_n would refuse every stand-in challenger)
GATE = {"split": "test", "n_boot": 200, "seed": 0,
        "rules": [{"metric": "regression.all.mae", "greater_is_better": False, "min_absolute_change": -10.0}]}


def _exports(labevents: Path, out: Path) -> tuple[Path, Path]:
    """export1: 70 % of the subjects; export2 (incremental): the others."""
    df = pd.read_csv(labevents, dtype=str, keep_default_na=False)
    subjects = sorted(df["subject_id"].unique(), key=int)
    old = df["subject_id"].isin(subjects[: int(len(subjects) * 0.7)])
    e1, e2 = out / "export1.csv", out / "export2.csv"
    df[old].to_csv(e1, index=False)
    df[~old].to_csv(e2, index=False)
    return e1, e2


def _run(out: Path, *sets: str, rc: int = 0) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "ecgka", "run", "pipelines/retrain.yaml", "--out", str(out),
                             "--set", *sets, *SMALL], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == rc, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def mimic(tmp_path_factory):
    from ecgka.standin import generate_standin

    root = tmp_path_factory.mktemp("retrain")
    generate_standin(root / "mimic", subjects=60, seed=3, workers=1)
    return root, *_exports(root / "mimic" / "hosp" / "labevents.csv.gz", root)


def test_retrain_pipeline_twice_then_a_new_version(mimic):
    root, e1, e2 = mimic
    registry, ecg = root / "registry", root / "mimic" / "ecg"
    (root / "gate.yaml").write_text(json.dumps(GATE))
    common = (f"registry={registry}", f"ecg_root={ecg}", f"gate={root / 'gate.yaml'}")
    # a registry with no champion (a typo, or a new one) is refused before anything runs, unless said so
    typo = _run(root / "r0", f"registry={root / 'regsitry'}", f"ecg_root={ecg}", f"labs={e1}", rc=2)
    assert "has no champion" in typo.stderr and not (root / "r0").exists() and not (root / "regsitry").exists()
    first = _run(root / "r1", *common, f"labs={e1}", "new_registry=true")
    assert "[skip]" not in first.stdout
    assert "v0001: first registration: no champion -> champion" in first.stdout  # the gate's decision
    reg = ModelRegistry(registry)
    assert reg.aliases() == {"champion": "v0001"}
    comparison = json.loads(ComparisonDir(root / "r1" / "compare").json.read_text())
    assert comparison["gate"]["reason"] == "first registration: no champion" and comparison["champion"] is None
    again = _run(root / "r1", *common, f"labs={e1}", "new_registry=true")
    assert again.stdout.count("[skip]") == 6 and "[run ]" not in again.stdout
    assert [e["event"] for e in reg.read_log()] == ["register", "alias", "promote"]

    second = _run(root / "r2", *common, f"labs={e2}", f"previous={root / 'r1' / 'dataset'}")
    assert "[skip]" not in second.stdout
    assert reg.versions() == ["v0001", "v0002"] and reg.record("v0002")["parent"] == "v0001"
    # fine-tuned from the registry's frozen copy of the champion, never from its origin run folder
    assert reg.record("v0002")["run"]["init"] == str(reg.dir.run_dir("v0001"))
    assert reg.record("v0002")["config"]["init"]["mode"] == "full"  # every weight, from the champion's
    comparison = json.loads(ComparisonDir(root / "r2" / "compare").json.read_text())
    assert comparison["champion"] == "v0001" and comparison["challenger"] == "v0002"
    rows = pd.read_csv(ComparisonDir(root / "r2" / "compare").csv)
    assert rows["dataset"].nunique() == 2  # the new test split and the previous one
    assert {"regression.few.mae", "clinical.conditions.hyper.operating_point.test.npv"} <= set(rows["metric"])
    assert len(comparison["lineage"]) >= 2  # the new version and its parent
    decision = json.loads(ComparisonDir(root / "r2" / "gate").gate.read_text())
    last = reg.read_log()[-1]
    assert last["event"] == ("promote" if decision["promote"] else "refuse") and last["version"] == "v0002"
    assert reg.aliases()["champion"] == ("v0002" if decision["promote"] else "v0001")
    assert "## Gate decision" in ComparisonDir(root / "r2" / "compare").markdown.read_text()
    _corrected_export_into_the_same_out(root, common, e1, reg)


def _corrected_export_into_the_same_out(root: Path, common: tuple, e1: Path, reg: ModelRegistry) -> None:
    """The same --out again with a corrected export: the registered champion's run folder and dataset stay,
    the challenger trains into a new attempt folder, and the gate compares two different models."""
    from ecgka.catalog import RunDir
    from ecgka.io import sha256_file

    champion_run = root / "r1" / "challenger"  # v0001's run folder
    sha, champion = reg.record("v0001")["run"]["checkpoint_sha256"], reg.aliases()["champion"]
    df = pd.read_csv(e1, dtype=str, keep_default_na=False)
    df.loc[df.index[:5], "valuenum"] = "6.1"  # corrected values
    df.to_csv(root / "export1c.csv", index=False)
    result = subprocess.run([sys.executable, "-m", "ecgka", "run", "pipelines/retrain.yaml", "--out",
                             str(root / "r1"), "--set", *common, f"labs={root / 'export1c.csv'}", *SMALL],
                            cwd=REPO, capture_output=True, text=True)
    assert sha256_file(RunDir(champion_run).checkpoint("best")) == sha  # never removed or retrained in place
    assert (root / "r1" / "challenger.2").is_dir() and "challenger.2" in result.stdout
    if result.returncode == 0:
        comparison = json.loads(ComparisonDir(root / "r1" / "compare").json.read_text())
        assert comparison["champion"] == champion
        decision = json.loads(ComparisonDir(root / "r1" / "gate").gate.read_text())
        assert decision["models"]["champion"] != decision["models"]["challenger"]
    else:  # the rebuilt dataset's test split holds the champion's training subjects: refused, one line
        assert result.returncode == 2 and "subject(s)" in result.stderr, result.stderr[-3000:]
