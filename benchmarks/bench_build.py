"""Per-record cost of the whole ``ecgka build`` against ``wfdb.rdrecord`` alone, same records, same run.

Generates a stand-in (or uses --standin DIR), then measures on one core:
  1. ``wfdb.rdrecord`` of every record the build reads (the reference);
  2. the fast MIMIC reader alone, and read + lead selection + QC per record;
  3. the whole build (labs, pairing, signal stage, splits, shards, manifest), workers=1, run twice: the
     first includes one-off imports (cold), the second is the steady per-record cost (warm);
  4. the WFDB checksum check: read + QC and the whole build again with the check off, in the same run
     (printed as a ratio; it must stay under 10 % of the build).
Prints ms/record and ratios to (1). Usage: python benchmarks/bench_build.py [--subjects 200] [--standin DIR]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from _common import run_in_scratch
from _common import standin as standin_for

os.environ.setdefault("OMP_NUM_THREADS", "1")


def _time_per_record(fn, records, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for r in records:
            fn(r)
        best = min(best, time.perf_counter() - start)
    return best / len(records) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=200)
    parser.add_argument("--standin", type=Path, help="existing stand-in (ecg/ and hosp/) instead of generating one")
    parser.add_argument("--leads", default="II", help="comma-separated leads to keep, e.g. all 12")
    args = parser.parse_args()
    run_in_scratch("bench_build_", _run, args)


def _run(args: argparse.Namespace, tmp: Path) -> None:
    import pandas as pd
    import wfdb

    from ecgka.config import apply_overrides
    from ecgka.data import mimic_reader
    from ecgka.data.build import build_dataset
    from ecgka.data.config import BuildConfig
    from ecgka.data.mimic_reader import read_record
    from ecgka.data.signal_qc import process_signal

    standin = standin_for(args, tmp)
    cfg = BuildConfig.model_validate(apply_overrides({}, [f"signal.leads=[{args.leads}]"]))
    root = standin / "ecg"
    paths = pd.read_csv(root / "record_list.csv")["path"]
    records = [root / p for p in paths if Path(f"{root / p}.hea").is_file()]

    labs = [standin / "hosp" / "labevents.csv.gz"]
    t0 = time.perf_counter()
    build_dataset(root, labs, tmp / "cold", cfg, workers=1)  # first build in this process: includes imports
    t_cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    m = build_dataset(root, labs, tmp / "out", cfg, workers=1)
    t_build = time.perf_counter() - t0
    # the same build with and without the checksum check, alternated, best of 3 each (workers=1: in process)
    best = {True: t_build, False: float("inf")}
    for i in range(3):
        for check in (False, True):
            mimic_reader.VERIFY_CHECKSUMS = check
            t0 = time.perf_counter()
            build_dataset(root, labs, tmp / f"check{int(check)}-{i}", cfg, workers=1)
            best[check] = min(best[check], time.perf_counter() - t0)
    mimic_reader.VERIFY_CHECKSUMS = True
    t_build_check, t_nocheck = best[True], best[False]
    t_wfdb = _time_per_record(lambda r: wfdb.rdrecord(str(r)), records)
    t_fast = _time_per_record(lambda r: read_record(r), records, repeat=3)

    def qc(r):
        try:
            process_signal(read_record(r), cfg.signal)
        except Exception:
            pass

    t_stage = _time_per_record(qc, records, repeat=2)
    mimic_reader.VERIFY_CHECKSUMS = False
    t_stage_nocheck = _time_per_record(qc, records, repeat=2)
    mimic_reader.VERIFY_CHECKSUMS = True
    n_signal = m["counts"]["record_list"] - m["exclusions"].get("no_lab_in_window", 0)
    per_build = t_build / m["counts"]["record_list"] * 1e3
    per_signal_record = m["build"]["seconds"] / max(1, n_signal) * 1e3
    print(f"records: {len(records)} in record_list, {n_signal} read by the signal stage, leads {args.leads}")
    print(f"{'wfdb.rdrecord alone':<42} {t_wfdb:8.3f} ms/record   1.00x")
    print(f"{'fast reader alone':<42} {t_fast:8.3f} ms/record   {t_fast / t_wfdb:.3f}x")
    print(f"{'read + lead select + QC':<42} {t_stage:8.3f} ms/record   {t_stage / t_wfdb:.3f}x")
    print(f"{'signal stage: read+QC+clean+write':<42} {per_signal_record:8.3f} ms/record   {per_signal_record / t_wfdb:.3f}x")
    print(f"{'whole build / record_list rows':<42} {per_build:8.3f} ms/record   {per_build / t_wfdb:.3f}x")
    per_cold = t_cold / m["counts"]["record_list"] * 1e3
    print(f"{'whole build, cold (first in process)':<42} {per_cold:8.3f} ms/record   {per_cold / t_wfdb:.3f}x")
    print(f"checksum check: read + QC {t_stage:.3f} vs {t_stage_nocheck:.3f} ms/record without "
          f"({t_stage / t_stage_nocheck - 1:+.1%}); whole build (best of 3, alternated) {t_build_check:.2f} s vs "
          f"{t_nocheck:.2f} s without (ratio {t_build_check / t_nocheck:.3f}, {t_build_check / t_nocheck - 1:+.1%}; "
          f"goal < +10 %: {t_build_check / t_nocheck < 1.10})")
    print(f"whole build: {t_build:.2f} s wall (cold {t_cold:.2f} s), one core; goal met (whole build cheaper per "
          f"record than wfdb.rdrecord alone): {per_build < t_wfdb}")
    paired_share = n_signal / m["counts"]["record_list"]
    stage_min = 800_035 * 0.5 * per_signal_record / 1e3 / 16 / 60
    print(f"estimate, full MIMIC-IV-ECG (800,035 records, ~50 % paired; {paired_share:.0%} here): signal-stage CPU "
          f"{stage_min:.1f} min on 16 cores; disk reads, lab extraction (bench_labs.py) and the one-process "
          f"assembly come on top (docs/real-mimic.md)")

if __name__ == "__main__":
    main()
