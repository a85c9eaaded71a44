"""Learning evidence on the stand-in: vanilla vs Dist Loss (two-stage) vs the constant median predictor.

stand-in (``ecgka synth``) -> dataset (``ecgka build``) -> ``train_run`` vanilla (stage 1) -> stage 2 on the
vanilla model's frozen backbone with a re-initialised final linear layer: Dist Loss (INV-L2, weight 1) and,
as a control, a plain MSE refit -> test-split MAE overall and per shot group (many/median/few, from the
manifest), also for the constant predictor that always answers the median training label, and paired
subject-level bootstrap CIs of the MAE reductions. Runs that are complete are reused.

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

from ecgka.catalog import DatasetDir  # noqa: E402
from ecgka.labels import LabelGrid  # noqa: E402
from ecgka.metrics.bootstrap import bootstrap_ci  # noqa: E402
from ecgka.training import load_train_config, predict, train_run  # noqa: E402
from ecgka.training.selection import selection_metrics  # noqa: E402
from ecgka.training.shard_loading import load_split  # noqa: E402

GROUPS = ("mae", "mae_many", "mae_median", "mae_few", "balanced_mae")


def ecgka(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "ecgka", *args], check=True, cwd=REPO)


def dataset(out: Path, subjects: int, per_bin_cap: int, workers: int, build_set: list[str]) -> Path:
    standin, data = out / "standin", out / "data"
    if not standin.is_dir():
        ecgka("synth", "--out", str(standin), "--subjects", str(subjects), "--seed", "0", "--workers", str(workers))
    if DatasetDir(data).manifest_or_none() is None:
        ecgka("build", "--ecg-root", str(standin / "ecg"), "--labs", str(standin / "hosp/labevents.csv.gz"),
              "--out", str(data), "--workers", str(workers), "--quiet", f"split.per_bin_cap={per_bin_cap}",
              *build_set)
    return data


def metrics_of(pred: np.ndarray, labels: np.ndarray, manifest: dict) -> dict[str, float]:
    return selection_metrics(pred, labels, LabelGrid.from_manifest(manifest), manifest["train_bin_counts"]["counts"])


def reduction_ci(better: np.ndarray, worse: np.ndarray, labels: np.ndarray, subjects: np.ndarray,
                 manifest: dict, n_boot: int) -> dict[str, list[float]]:
    """Relative MAE reduction 1 - MAE(better)/MAE(worse) per group, with a paired 95 % CI from a bootstrap
    over test subjects (both predictors scored on the same replicate)."""

    def reduction(idx: np.ndarray, group: str) -> float | None:
        a = metrics_of(better[idx], labels[idx], manifest).get(group)
        b = metrics_of(worse[idx], labels[idx], manifest).get(group)
        return None if a is None or b is None or b == 0 else 1.0 - a / b

    everything = np.arange(len(labels))
    out = {}
    for group in ("mae", "mae_few", "balanced_mae"):
        ci = bootstrap_ci(lambda idx, g=group: reduction(idx, g), subjects, n_boot=n_boot)
        out[group] = [reduction(everything, group), ci["lower"], ci["upper"]]
    return out


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
    parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap replicates for the CIs")
    parser.add_argument("--out", default=None, help="keep everything here (default: a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        t0 = time.perf_counter()
        data = dataset(out, args.subjects, args.per_bin_cap, args.threads, args.build_set)
        data_seconds = time.perf_counter() - t0
        manifest = DatasetDir(data).read_manifest()
        common = [f"model.preset={args.preset}", f"batch_size={args.batch}", f"threads={args.threads}",
                  "progress=false", *args.train_set]
        stage2 = [*common, f"epochs={args.stage2_epochs or args.epochs}"]
        vanilla = out / "runs/vanilla"
        train_run(load_train_config(REPO / "configs/train/vanilla.yaml",
                                    [*common, f"epochs={args.epochs}", *args.vanilla_set]), data, vanilla)
        # stage 2 on the same frozen backbone: a plain MSE head refit (control) and Dist Loss (the paper's scheme)
        runs = {"vanilla": vanilla, "MSE head refit": out / "runs/head_refit", "Dist Loss (two-stage)": out / "runs/dist_loss"}
        for name, config in (("MSE head refit", "vanilla.yaml"), ("Dist Loss (two-stage)", "dist_loss.yaml")):
            train_run(load_train_config(REPO / "configs/train" / config, [*stage2, "init.mode=head"]), data, runs[name],
                      init=vanilla)
        tests = {name: predict(run, data, "test", checkpoint="best", device="cpu") for name, run in runs.items()}
        labels, subjects = tests["vanilla"]["label"].to_numpy(), tests["vanilla"]["subject_id"].to_numpy()
        median = float(np.median(load_split(data, "train").labels))
        preds = {"constant median": np.full(len(labels), median),
                 **{name: df["prediction"].to_numpy() for name, df in tests.items()}}
        rows = {name: metrics_of(p, labels, manifest) for name, p in preds.items()}
        pairs = (("vanilla", "constant median"), ("Dist Loss (two-stage)", "vanilla"),
                 ("Dist Loss (two-stage)", "MSE head refit"))
        cis = {f"{a} vs {b}": reduction_ci(preds[a], preds[b], labels, subjects, manifest, args.n_boot) for a, b in pairs}
        counts = manifest["counts"]
        seconds = {name: sum(json.loads(line)["seconds"] for line in (run / "log.jsonl").read_text().splitlines())
                   for name, run in runs.items()}
        print(f"\nstand-in {args.subjects} subjects -> train {counts['train']}, val {counts['val']}, "
              f"test {counts['test']}; preset {args.preset}, batch {args.batch}, {args.epochs} epochs; "
              f"median training label {median:.2f}; dataset {data_seconds:.0f} s (0 when reused); "
              + ", ".join(f"{name} {sec:.0f} s" for name, sec in seconds.items()))
        print(f"{'test MAE (mmol/L)':<24}" + "".join(f"{g:>14}" for g in GROUPS))
        for name, m in rows.items():
            print(f"{name:<24}" + "".join(f"{m.get(g, float('nan')):>14.3f}" for g in GROUPS))
        print(f"\nMAE reduction, paired 95 % CI over {len(np.unique(subjects))} test subjects ({args.n_boot} replicates)")
        for name, groups in cis.items():
            print(f"{name:<40}" + "".join(f"  {g} {v:+.1%} [{lo:+.1%}, {hi:+.1%}]" for g, (v, lo, hi) in groups.items()))
        print(json.dumps({"test_mae": rows, "reduction_ci": cis}))


if __name__ == "__main__":
    main()
