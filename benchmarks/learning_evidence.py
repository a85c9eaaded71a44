"""Learning evidence on the stand-in: vanilla vs Dist Loss (two-stage) vs the constant median predictor.

stand-in (``ecgka synth``) -> dataset (``ecgka build``) -> ``train_run`` vanilla (stage 1) -> Dist Loss
(stage 2: the vanilla model's re-initialised final linear layer, INV-L2, weight 1) -> test-split MAE
overall and per shot group (many/median/few, from the manifest), also for the constant predictor that
always answers the median training label.

    python benchmarks/learning_evidence.py [--subjects 3000] [--epochs 10] [--preset ecg] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ecgka.training import load_train_config, predict, train_run  # noqa: E402
from ecgka.training.data import load_split, read_manifest  # noqa: E402
from ecgka.training.metrics import selection_metrics  # noqa: E402

GROUPS = ("mae", "mae_many", "mae_median", "mae_few", "balanced_mae")


def ecgka(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "ecgka", *args], check=True, cwd=REPO)


def dataset(out: Path, subjects: int, per_bin_cap: int, workers: int, build_set: list[str]) -> Path:
    standin, data = out / "standin", out / "data"
    if not standin.is_dir():
        ecgka("synth", "--out", str(standin), "--subjects", str(subjects), "--seed", "0", "--workers", str(workers))
    if not (data / "manifest.json").is_file():
        ecgka("build", "--ecg-root", str(standin / "ecg"), "--labs", str(standin / "hosp/labevents.csv.gz"),
              "--out", str(data), "--workers", str(workers), "--quiet", f"split.per_bin_cap={per_bin_cap}",
              *build_set)
    return data


def test_metrics(run: Path, data: Path, manifest: dict) -> dict[str, float]:
    df = predict(run, data, "test", checkpoint="best", device="cpu")
    return selection_metrics(df["prediction"].to_numpy(), df["label"].to_numpy(), manifest["label"],
                             manifest["shot_groups"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=3000)
    parser.add_argument("--per-bin-cap", type=int, default=8, help="val/test samples per label bin")
    parser.add_argument("--preset", default="ecg")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--stage2-epochs", type=int, default=None, help="default: --epochs")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--build-set", action="append", default=[], metavar="KEY=VALUE",
                        help="build override, e.g. signal.fs=100 (repeatable)")
    parser.add_argument("--train-set", action="append", default=[], metavar="KEY=VALUE",
                        help="training override for both stages, e.g. model.overrides.dropout=0.1 (repeatable)")
    parser.add_argument("--vanilla-set", action="append", default=[], metavar="KEY=VALUE",
                        help="training override for the vanilla (stage 1) run only, e.g. optim.milestones=[20,32]")
    parser.add_argument("--out", default=None, help="keep everything here (default: a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        t0 = time.perf_counter()
        data = dataset(out, args.subjects, args.per_bin_cap, args.threads, args.build_set)
        manifest = read_manifest(data)
        common = [f"model.preset={args.preset}", f"batch_size={args.batch}", f"threads={args.threads}",
                  "progress=false", *args.train_set]
        vanilla = out / "runs/vanilla"
        train_run(load_train_config(REPO / "configs/train/vanilla.yaml", [*common, f"epochs={args.epochs}", *args.vanilla_set]),
                  data, vanilla)
        t1 = time.perf_counter()
        dist = out / "runs/dist_loss"
        train_run(load_train_config(REPO / "configs/train/dist_loss.yaml",
                                    [*common, f"epochs={args.stage2_epochs or args.epochs}"]), data, dist, init=vanilla)
        t2 = time.perf_counter()
        train_labels = load_split(data, "train").labels
        test = predict(vanilla, data, "test", checkpoint="best", device="cpu")
        median = float(np.median(train_labels))
        rows = {
            "constant median": selection_metrics(np.full(len(test), median), test["label"].to_numpy(),
                                                 manifest["label"], manifest["shot_groups"]),
            "vanilla": test_metrics(vanilla, data, manifest),
            "Dist Loss (two-stage)": test_metrics(dist, data, manifest),
        }
        counts = manifest["counts"]
        print(f"\nstand-in {args.subjects} subjects -> train {counts['train']}, val {counts['val']}, "
              f"test {counts['test']}; preset {args.preset}, batch {args.batch}, {args.epochs} epochs; "
              f"median training label {median:.2f}; vanilla {t1 - t0:.0f} s (incl. data), Dist Loss {t2 - t1:.0f} s")
        print(f"{'test MAE (mmol/L)':<24}" + "".join(f"{g:>14}" for g in GROUPS))
        for name, m in rows.items():
            print(f"{name:<24}" + "".join(f"{m.get(g, float('nan')):>14.3f}" for g in GROUPS))
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
