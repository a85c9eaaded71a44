"""ECGs per second of ``ecgka predict`` against ``wfdb.rdrecord`` alone, same records, same run.

Generates a stand-in, builds it, trains a tiny Net1D (1 epoch) and evaluates it (operating points), then
measures on this machine: (1) ``wfdb.rdrecord`` of every record (the reference: reading only); (2) the
whole ``predict_ecgs`` (the build's reader, QC and cleaning, float16, z-score and the model, Parquet out),
run twice (cold, then warm); (3) issue 23: ``predict_ecgs`` with the conformal layer's interval and
probability columns (and the accepted-set list columns) against without them (the run's ``uncertainty.json`` present or not; fitted from the
val predictions when evaluate wrote none), alternated ``--repeats`` times each, and the columns' own cost
on the same predictions. Goal: with / without >= 0.95. Usage: python benchmarks/bench_predict.py
[--subjects 200] [--device cpu] [--preset tiny|ecg] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("ECGKA_MIN_N_BOOT", "1")  # the evaluation only fixes operating points here (n_boot=20)
REPO = Path(__file__).resolve().parents[1]


def _prepare(tmp: Path, subjects: int, preset: str) -> tuple[Path, Path]:
    from ecgka.config import load_config
    from ecgka.data.build import build_dataset
    from ecgka.data.config import BuildConfig
    from ecgka.evaluation import EvalConfig, evaluate_run
    from ecgka.standin import generate_standin
    from ecgka.training import load_train_config, train_run

    generate_standin(tmp / "standin", subjects=subjects, seed=0, workers=1)
    cfg = load_config(BuildConfig, str(REPO / "configs/data/ecg_ka_dir.yaml"), ["split.per_bin_cap=3"])
    build_dataset(tmp / "standin/ecg", [tmp / "standin/hosp/labevents.csv.gz"], tmp / "ds", cfg, workers=1)
    overrides = [f"model.preset={preset}", "epochs=1", "batch_size=32", "progress=false", "threads=1"]
    train_run(load_train_config(None, overrides), tmp / "ds", tmp / "run")
    evaluate_run(tmp / "run", tmp / "ds", "test", EvalConfig(n_boot=20))
    return tmp / "standin/ecg", tmp / "run"


def _uncertainty_ratio(run: Path, ecg_root: Path, out: Path, device: str, n: int, repeats: int) -> dict:
    """ECG/s of predict with and without the uncertainty columns (median of ``repeats`` each, alternating
    which goes first, after one warm-up round)."""
    import json
    import statistics

    from ecgka.catalog import RunDir, resolve_weights
    from ecgka.io import sha256_file
    from ecgka.metrics.conformal import layer_from_json
    from ecgka.release.registry import run_uncertainty
    from ecgka.release.scoring import predict_ecgs

    rd = RunDir(run)
    layer = run_uncertainty(rd, sha256_file(resolve_weights(run)))
    text = json.dumps(layer)
    rates: dict[str, list[float]] = {"with": [], "without": []}
    table = None
    for i in range(repeats + 1):
        for mode in ("with", "without") if i % 2 else ("without", "with"):  # alternate which goes first
            if mode == "with":
                rd.uncertainty.write_text(text)
            else:
                rd.uncertainty.unlink(missing_ok=True)
            start = time.perf_counter()
            result = predict_ecgs(str(run), ecg_root, out, device=device, force=True)
            if i:  # the first round warms both up
                rates[mode].append(n / (time.perf_counter() - start))
            if mode == "with":
                table = result
    preds = table["potassium_pred"].to_numpy()
    fitted = layer_from_json(layer)
    start = time.perf_counter()
    for _ in range(20):
        fitted.columns(preds)
        fitted.sets(preds)
    columns_s = (time.perf_counter() - start) / 20
    with_, without = statistics.median(rates["with"]), statistics.median(rates["without"])
    return {"with": with_, "without": without, "ratio": with_ / without, "columns_ms": 1000 * columns_s,
            "n_columns": sum(c in table.columns for c in (*fitted.column_names, *fitted.set_column_names))}


def main() -> None:
    import pandas as pd
    import wfdb

    from ecgka.release.scoring import predict_ecgs

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=200)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--preset", default="tiny", help="Net1D preset of the model (the paper's: ecg)")
    parser.add_argument("--repeats", type=int, default=3, help="timed predict runs with and without intervals")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_predict_"))
    try:
        ecg_root, run = _prepare(tmp, args.subjects, args.preset)
        paths = pd.read_csv(ecg_root / "record_list.csv")["path"].tolist()
        start = time.perf_counter()
        for p in paths:
            wfdb.rdrecord(str(ecg_root / p))
        rd = len(paths) / (time.perf_counter() - start)
        rates = []
        for _ in range(2):
            start = time.perf_counter()
            predict_ecgs(str(run), ecg_root, tmp / "scores.parquet", device=args.device, force=True)
            rates.append(len(paths) / (time.perf_counter() - start))
        print(f"{len(paths)} ECGs, Net1D {args.preset}, device {args.device}, threads {os.environ['OMP_NUM_THREADS']}")
        print(f"wfdb.rdrecord only       {rd:8.1f} ECG/s")
        print(f"ecgka predict (cold)     {rates[0]:8.1f} ECG/s  ({rates[0] / rd:.2f} x rdrecord)")
        print(f"ecgka predict (warm)     {rates[1]:8.1f} ECG/s  ({rates[1] / rd:.2f} x rdrecord)")
        u = _uncertainty_ratio(run, ecg_root, tmp / "scores.parquet", args.device, len(paths), args.repeats)
        print(f"predict with intervals   {u['with']:8.1f} ECG/s  ({u['n_columns']} columns; median of {args.repeats})")
        print(f"predict without          {u['without']:8.1f} ECG/s")
        print(f"with / without           {u['ratio']:8.3f}      (goal >= 0.95; the columns alone: "
              f"{u['columns_ms']:.2f} ms for {len(paths)} ECGs)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
