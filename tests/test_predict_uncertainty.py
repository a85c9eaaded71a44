"""``ecgka predict``'s interval and probability columns come from the card's conformal layer: a plain Python
consumer reading only the card JSON and the model's outputs reproduces them; the registry carries the layer."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from standin_factory import built_standin, trained_and_evaluated

from ecgka.catalog import RunDir
from ecgka.errors import InputError
from ecgka.keys import SET_COLUMNS, interval_columns
from ecgka.labels import LabelGrid
from ecgka.metrics.conformal import fit_label_conditional, mondrian_edges
from ecgka.release.card import uncertainty_block
from ecgka.release.scoring import uncertainty_columns

REPO = Path(__file__).resolve().parents[1]
GRID = LabelGrid.preset("potassium")
OPS = {"lt": lambda a, b: a < b, "ge": lambda a, b: a >= b, "gt": lambda a, b: a > b}


def _f32(x: float) -> float:
    return struct.unpack("f", struct.pack("f", x))[0]


def plain_consumer(card: dict, predictions) -> dict[str, list]:
    """The card's ``uncertainty.formula``, in plain Python (floats, math), from the card JSON alone."""
    layer = card["uncertainty"]["layer"]
    bins, out = layer["bins"], {}
    score = layer.get("score", "residual")  # a layer stored before the calibrated score is residual
    a, c = layer.get("intercept", 0.0), layer.get("slope", 1.0)
    for i, level in enumerate(layer["levels"]):
        tag = f"{round(level * 100, 6):g}".replace(".", "_")
        lows, highs, sets = [], [], []
        for yhat in predictions:
            if math.isnan(yhat):
                lows.append(math.nan)
                highs.append(math.nan)
                sets.append(None)
                continue
            pieces = []
            for b in bins:
                q_lo = -math.inf if b["q_lo"][i] is None else b["q_lo"][i]
                q_hi = math.inf if b["q_hi"][i] is None else b["q_hi"][i]
                if score == "calibrated":  # accepted: q_lo <= yhat - (a + c K) <= q_hi
                    low, high = (yhat - q_hi - a) / c, (yhat - q_lo - a) / c
                else:  # residual: q_lo <= K - yhat <= q_hi
                    low, high = yhat + q_lo, yhat + q_hi
                left = max(-math.inf if b["lo"] is None else b["lo"], low)
                right = min(math.inf if b["hi"] is None else b["hi"], high)
                if left <= right:  # open at the bin's upper edge when cut there (that K is the next bin's)
                    pieces.append((left, right, b["hi"] is not None and high >= b["hi"] <= layer["label_hi"]))
            lo, hi = (min(p[0] for p in pieces), max(p[1] for p in pieces)) if pieces else (yhat, yhat)
            lows.append(min(max(lo, layer["label_lo"]), layer["label_hi"]))
            highs.append(min(max(hi, layer["label_lo"]), layer["label_hi"]))
            joined = []  # the accepted set: pieces clipped, as float32, joined where they touch
            for left, right, right_open in pieces or [(yhat, yhat, False)]:
                left, right = (_f32(min(max(v, layer["label_lo"]), layer["label_hi"])) for v in (left, right))
                if joined and left <= joined[-1]["hi"]:
                    if right >= joined[-1]["hi"]:
                        joined[-1].update(hi=right, hi_open=right_open)
                else:
                    joined.append({"lo": left, "hi": right, "hi_open": right_open})
            sets.append(joined)
        out[f"k_lo_{tag}"], out[f"k_hi_{tag}"], out[f"k_set_{tag}"] = lows, highs, sets
    n_cells = len(bins[0]["density"])
    grid = [round(layer["prior_lo"] + j * layer["prior_step"], 10) for j in range(len(layer["prior"]))]

    def bin_of(value):
        return next(k for k, b in enumerate(bins) if (b["lo"] is None or b["lo"] <= value)
                    and (b["hi"] is None or value < b["hi"]))

    which = [bin_of(g) for g in grid]
    for rule in layer["conditions"].values():
        probs = []
        for yhat in predictions:
            if math.isnan(yhat):
                probs.append(math.nan)
                continue
            cell = min(max(math.floor((yhat - layer["density_lo"]) / layer["density_step"]), 0), n_cells - 1)
            w = [p * bins[b]["density"][cell] for p, b in zip(layer["prior"], which, strict=True)]
            hit = sum(wj for wj, g in zip(w, grid, strict=True) if OPS[rule["op"]](round(g, 6), rule["threshold"]))
            probs.append(hit / sum(w))
        out[rule["column"]] = probs
    return out


def _check_reproduced(card: dict, predictions: np.ndarray, columns: dict) -> None:
    plain = plain_consumer(json.loads(json.dumps(card)), predictions.astype(np.float64).tolist())
    assert set(plain) == set(columns)
    for name, values in plain.items():
        if name.startswith("k_set_"):  # the accepted sets: exactly, piece by piece
            assert values == [None if v is None else [dict(p) for p in v] for v in columns[name]], name
        elif name.startswith("k_"):  # intervals: exactly (the same float64 operations, then float32)
            np.testing.assert_array_equal(np.asarray(values, dtype=np.float32), columns[name], err_msg=name)
        else:  # probabilities: sums in another order
            np.testing.assert_allclose(np.asarray(values), columns[name], atol=2e-6, err_msg=name)


def _bench_simulate():
    spec = importlib.util.spec_from_file_location("bench_conformal", REPO / "benchmarks" / "bench_conformal.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.simulate


@pytest.mark.parametrize("score", ["residual", "calibrated"])
def test_card_block_reproduced_by_a_plain_consumer(tmp_path, score):
    simulate = _bench_simulate()
    y_train, _ = simulate(5000, 0)
    y, yhat = simulate(1500, 1)
    counts = GRID.counts(y_train)
    layer = fit_label_conditional(y, yhat, edges=mondrian_edges(GRID, counts), prior_counts=counts,
                                  prior_lo=GRID.lo, prior_step=GRID.step, score=score)
    assert layer.score == score
    run = RunDir(tmp_path)
    run.uncertainty.write_text(json.dumps(layer.model_copy(update={"source": {"checkpoint_sha256": "abc"}})
                                          .model_dump(mode="json")))
    card = {"uncertainty": uncertainty_block(run, "abc")}
    block = card["uncertainty"]
    assert block["fitted_on"] == "val" and block["columns"][:2] == list(interval_columns(0.8))
    assert block["layer"]["score"] == score and f'"{score}"' in block["formula"]
    assert "floor(a/2 (n+1))" in block["formula"] and ("fewer than" in block["merged"] or "no range merged" in block["merged"])
    preds = np.concatenate([simulate(300, 2)[1], [np.nan, 0.5, 11.0, 2.0, 7.9]]).astype(np.float32)
    columns = uncertainty_columns(card, preds)
    _check_reproduced(card, preds, columns)
    # a layer fitted from other weights is not put in the card; a run without one has none
    assert uncertainty_block(run, "other") is None
    run.uncertainty.unlink()
    assert uncertainty_block(run, "abc") is None and uncertainty_columns({"uncertainty": None}, preds) == {}


# ---------------------------------------------------------------- end to end: evaluate, register, predict


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    ecg, data = built_standin(tmp_path_factory.mktemp("predict_uncertainty"))
    return ecg, data, trained_and_evaluated(data, data.parent / "run")


@pytest.mark.slow
def test_registered_model_predicts_intervals_a_plain_consumer_reproduces(trained, tmp_path):
    from ecgka.catalog import RegistryDir
    from ecgka.release.registry import ModelRegistry
    from ecgka.release.scoring import predict_ecgs

    ecg_root, _, run = trained
    origin = tmp_path / "run"
    shutil.copytree(run, origin)
    RunDir(origin).uncertainty.unlink(missing_ok=True)  # registration fits it from the val predictions
    reg = ModelRegistry(tmp_path / "registry")
    name = reg.register(origin)
    copy = RunDir(reg.dir.run_dir(name))
    assert copy.read_uncertainty()["source"]["split"] == "val"
    # the default (calibrated) score is asked: used, or (this tiny model barely follows K) the recorded fallback
    assert (copy.read_uncertainty()["score"], bool(copy.read_uncertainty()["score_note"])) in {
        ("calibrated", False), ("residual", True)}
    assert "uncertainty.json" in " ".join(reg.record(name)["files"])  # SHA-256 listed, verified on use
    card = json.loads((RegistryDir(tmp_path / "registry").export_dir(name).card_path).read_text())
    assert card["schema_version"] == 3 and card["uncertainty"]["layer"] == copy.read_uncertainty()
    table = predict_ecgs(f"{tmp_path / 'registry'}@{name}", ecg_root, tmp_path / "scores.parquet")
    assert table.attrs["note"] is None
    stored = pd.read_parquet(tmp_path / "scores.parquet")
    names = card["uncertainty"]["columns"]
    assert names == [*interval_columns(0.8), *interval_columns(0.9), *interval_columns(0.95), "p_hypo", "p_hyper",
                     "p_severe_hypo", "p_severe_hyper", *SET_COLUMNS]
    preds = stored["potassium_pred"].to_numpy()
    assert np.isfinite(preds).sum() > 10

    def read(column):  # a list column comes back as arrays of dicts
        if column not in SET_COLUMNS:
            return stored[column].to_numpy()
        return [None if v is None else [dict(p) for p in v] for v in stored[column]]

    _check_reproduced(card, preds, {c: read(c) for c in names})
    scored = np.isfinite(preds)
    assert np.all(stored.loc[scored, "k_lo_90"] <= stored.loc[scored, "k_hi_90"])
    # a run's own layer of these weights is copied as it is; one of other weights is refitted
    fitted = copy.read_uncertainty()
    sha = fitted["source"]["checkpoint_sha256"]
    for folder, recorded in (("own", sha), ("stale", "0" * 64)):
        clone = tmp_path / folder
        shutil.copytree(origin, clone)
        RunDir(clone).uncertainty.write_text(json.dumps({**fitted, "seed": 7, "source": {"checkpoint_sha256": recorded}}))
        layer = RunDir(reg.dir.run_dir(reg.register(clone))).read_uncertainty()
        assert (layer["seed"], layer["source"]["checkpoint_sha256"]) == ((7, sha) if folder == "own" else (0, sha))


@pytest.mark.slow
def test_model_without_layer_predicts_as_before_and_says_so(trained, tmp_path):
    from ecgka.release.registry import ModelRegistry
    from ecgka.release.scoring import predict_ecgs

    ecg_root, _, run = trained
    bare = tmp_path / "bare"
    shutil.copytree(run, bare)
    RunDir(bare).uncertainty.unlink(missing_ok=True)
    with_layer = predict_ecgs(str(bare), ecg_root, tmp_path / "a.parquet")  # fitted from its val predictions
    assert with_layer.attrs["note"] is None and "k_lo_90" in with_layer.columns
    RunDir(bare).predictions_path("val").unlink()
    table = predict_ecgs(str(bare), ecg_root, tmp_path / "b.parquet")
    assert "has no conformal layer" in table.attrs["note"] and "k_lo_90" not in table.columns
    np.testing.assert_array_equal(table["potassium_pred"], with_layer["potassium_pred"])
    with pytest.raises(InputError, match="no conformal layer .* and no val predictions"):
        ModelRegistry(tmp_path / "registry").register(bare)
