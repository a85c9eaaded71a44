"""Portable models: a fresh process without ecgka reproduces ecgka's predictions from the TorchScript export."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from shard_factory import write_dataset

from ecgka.errors import InputError
from ecgka.evaluation import EvalConfig, evaluate_run
from ecgka.release.export import export_run
from ecgka.training import load_train_config, predict, train_run
from ecgka.training.prediction import load_run_model
from ecgka.training.shard_loading import load_split, zscore_tensor

REPO = Path(__file__).resolve().parents[1]
FAST = ["model.preset=tiny", "batch_size=32", "progress=false", "threads=1", "epochs=1", "data.leads=[II]"]
N_SAMPLES = 200

pytestmark = pytest.mark.slow  # end to end: `make test` runs it, `make test-fast` skips it

FRESH = """
import sys, json, numpy as np, torch
model = torch.jit.load(sys.argv[1])
out = {}
for name in ("trained", "other"):
    x = torch.from_numpy(np.load(sys.argv[2] + "/" + name + ".npy"))
    with torch.no_grad():
        out[name] = model(x).tolist()
assert "ecgka" not in sys.modules, "the export must not need ecgka"
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    data = write_dataset(root / "ds", n_train=96, n_val=32, n_test=32, n_samples=N_SAMPLES, leads=("I", "II"),
                         shard_rows=48)
    run = root / "run"
    train_run(load_train_config(None, FAST), data, run)
    evaluate_run(run, data, "test", EvalConfig(n_boot=20))
    return run, data


def test_torchscript_export_reproduces_ecgka_in_a_fresh_process(run, tmp_path):
    run, data = run
    path = export_run(run, tmp_path / "export", "torchscript")
    card = json.loads((tmp_path / "export" / "card.json").read_text())
    assert card["input"]["leads"] == ["II"] and card["input"]["n_samples"] == N_SAMPLES
    assert card["operating_points"]["hyper"]["threshold"] is not None and card["label_grid"]["step"] > 0
    assert card["dataset"]["fingerprint"] and card["architecture"]["settings"]
    # what the model is and what it is for: its SHA-256s, its test metrics, its intended use
    from ecgka.io import sha256_file

    assert card["model"]["file_sha256"] == sha256_file(path) and card["registry"] is None
    assert card["model"]["checkpoint_sha256"] == sha256_file(run / "checkpoints" / "best.pt")
    assert card["metrics"]["mae"]["few"] is not None or card["metrics"]["mae"]["all"] is not None
    assert set(card["metrics"]["clinical"]["hyper"]) == {"sensitivity", "specificity"}
    assert "not a diagnostic device" in card["intended_use"]["not_for"]
    assert Path(card["dataset"]["path"]).is_absolute()
    split = load_split(data, "test")
    test_x = np.asarray(split.signals[:, [split.leads.index("II")]], dtype=np.float32)  # as ecgka stores them
    rng = np.random.default_rng(0)
    inputs = {"trained": test_x, "other": rng.normal(0, 1, (3, 1, 3 * N_SAMPLES + 7))}
    model, _ = load_run_model(run)
    for name, x in inputs.items():
        np.save(tmp_path / f"{name}.npy", x.astype(np.float32))
    result = subprocess.run([sys.executable, "-c", FRESH, str(path), str(tmp_path)], capture_output=True, text=True,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)
    for name, x in inputs.items():
        with torch.no_grad():
            want = model(zscore_tensor(torch.from_numpy(x.astype(np.float32)))).numpy()
        np.testing.assert_allclose(np.asarray(got[name]), want, atol=1e-5, rtol=0)
    ecgka_test = predict(run, data, "test")["prediction"].to_numpy()  # ecgka's own prediction path
    np.testing.assert_allclose(np.asarray(got["trained"]), ecgka_test, atol=1e-5, rtol=0)


def test_onnx_export_runs_in_onnxruntime_at_two_lengths(run, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    run, data = run
    path = export_run(run, tmp_path / "onnx", "onnx")
    session = ort.InferenceSession(str(path))
    model, _ = load_run_model(run)
    split = load_split(data, "test")
    trained = np.asarray(split.signals[:, [split.leads.index("II")]], dtype=np.float32)
    other = np.random.default_rng(1).normal(0, 1, (3, 1, 2 * N_SAMPLES + 13)).astype(np.float32)
    for x in (trained, other):
        got = session.run(None, {"ecg": x})[0]
        with torch.no_grad():
            want = model(zscore_tensor(torch.from_numpy(x))).numpy()
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    np.testing.assert_allclose(session.run(None, {"ecg": trained})[0], predict(run, data, "test")["prediction"],
                               atol=1e-5, rtol=0)


def test_export_cli_and_onnx_refusal(run, tmp_path):
    run, _ = run
    out = subprocess.run([sys.executable, "-m", "ecgka", "export", str(run), "--format", "torchscript", "--out",
                          str(tmp_path / "ts")], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0 and (tmp_path / "ts" / "model.ts").is_file()
    export_run(run, tmp_path / "ts", "torchscript")  # the same model again: fine
    with pytest.raises(InputError, match="pass --force"):
        export_run(run, tmp_path / "ts", "torchscript", checkpoint="last")
    try:
        import onnx  # noqa: F401
    except ImportError:
        with pytest.raises(InputError, match="onnx"):
            export_run(run, tmp_path / "onnx", "onnx")
