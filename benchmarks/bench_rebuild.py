"""Cost of a new dataset version (``ecgka build --previous``) against the first build: it grows with the new
records only.

On a stand-in (or --standin DIR), with one worker:
  0. a warm-up build (one-off imports), not counted;
  1. v1: the labs of half the subjects;
  2. v2 "few": --previous v1 plus the labs of a few more subjects (--few, default 5 % of them);
  3. v2 "many": --previous v1 plus the labs of all the other subjects;
  4. the same data as "many" built from scratch (no --previous), for comparison.
Prints seconds, records read by the reader, records reused and ratios.
Usage: python benchmarks/bench_rebuild.py [--subjects 300] [--few 0.05] [--standin DIR]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from _common import run_in_scratch
from _common import standin as standin_for

os.environ.setdefault("OMP_NUM_THREADS", "1")
OVERRIDES = ["split.per_bin_cap=8", "shards.chunk_records=64"]


def _exports(labevents: Path, out: Path, few: float) -> dict[str, Path]:
    """base: half the subjects; few: a few others; many: all the others (CSV exports of labevents rows)."""
    import pandas as pd

    df = pd.read_csv(labevents, dtype=str, keep_default_na=False)
    subjects = sorted(df["subject_id"].unique(), key=int)
    half = len(subjects) // 2
    groups = {"base": subjects[:half], "few": subjects[half:half + max(1, int(len(subjects) * few))],
              "many": subjects[half:]}
    paths = {}
    for name, group in groups.items():
        paths[name] = out / f"{name}.csv"
        df[df["subject_id"].isin(group)].to_csv(paths[name], index=False)
    return paths


def _build(ecg: Path, labs: list[Path], out: Path, previous: Path | None = None) -> tuple[float, dict]:
    from ecgka.config import apply_overrides
    from ecgka.data.build import build_dataset
    from ecgka.data.config import BuildConfig

    cfg = BuildConfig.model_validate(apply_overrides({}, OVERRIDES))
    start = time.perf_counter()
    manifest = build_dataset(ecg, labs, out, cfg, workers=1, previous=previous)
    return time.perf_counter() - start, manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=300)
    parser.add_argument("--few", type=float, default=0.05, help="share of subjects added by the 'few' version")
    parser.add_argument("--standin", type=Path, help="existing stand-in (ecg/ and hosp/) instead of generating one")
    args = parser.parse_args()
    run_in_scratch("bench_rebuild_", _run, args)


def _run(args: argparse.Namespace, tmp: Path) -> None:
    standin = standin_for(args, tmp)
    ecg = standin / "ecg"
    exports = _exports(standin / "hosp" / "labevents.csv.gz", tmp, args.few)
    _build(ecg, [exports["base"]], tmp / "warmup")
    rows = []
    t1, m1 = _build(ecg, [exports["base"]], tmp / "v1")
    rows.append(("v1 (half the subjects)", t1, m1))
    for name in ("few", "many"):
        t, m = _build(ecg, [exports[name]], tmp / f"v2-{name}", previous=tmp / "v1")
        rows.append((f"v2 --previous v1 + {name}", t, m))
    t_full, m_full = _build(ecg, [exports["base"], exports["many"]], tmp / "scratch")
    rows.append(("from scratch (= v2 many)", t_full, m_full))
    print(f"stand-in {standin} ({m1['counts']['record_list']} records), workers=1")
    print(f"{'build':<28} {'seconds':>8} {'signal s':>9} {'read':>6} {'reused':>7} {'ratio to v1':>12} "
          f"{'signal ratio':>13}")
    s1 = m1["build"]["seconds"]
    for name, t, m in rows:
        b = m["build"]
        print(f"{name:<28} {t:>8.2f} {b['seconds']:>9.2f} {b['read']:>6} {b['reused']:>7} {t / t1:>12.2f} "
              f"{b['seconds'] / s1:>13.2f}")
    few, many = rows[1], rows[2]
    per_read = (many[1] - few[1]) / max(1, many[2]["build"]["read"] - few[2]["build"]["read"]) * 1e3
    print(f"v2 many / from scratch: {many[1] / t_full:.2f}; marginal cost per new record read: {per_read:.1f} ms")


if __name__ == "__main__":
    main()
