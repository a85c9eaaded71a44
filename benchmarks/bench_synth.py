"""Speed of ``ecgka synth``: records per second per core, against ``wfdb.wrsamp`` writing the same records.

The reference is measured in the same run: the records the stand-in wrote are read back and written
again with ``wfdb.wrsamp`` (format 16, 200 adu/mV), which only writes (no synthesis, no labs). A ratio
below 1 means the whole stand-in (physiology + noise + WFDB bytes + labs + CSVs) costs less per record
than wfdb's writer alone.

    python benchmarks/bench_synth.py            # ~300 records, about a minute here
    python benchmarks/bench_synth.py --n 10000 --workers 2
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import wfdb  # noqa: E402

from ecgka.standin import ECG_DIR, LEADS, generate_standin  # noqa: E402
from ecgka.standin.wfdb_writer import to_digital, write_record  # noqa: E402

RECORDS_PER_SUBJECT = 3.1  # measured mean of the stand-in's timelines


def time_wrsamp(root: Path, paths: list[str], out: Path) -> float:
    """Seconds per record for wfdb.wrsamp writing the given stand-in records (signals read beforehand)."""
    signals = [np.fromfile(root / f"{p}.dat", dtype="<i2").reshape(5000, 12) for p in paths]
    out.mkdir()
    start = time.perf_counter()
    for i, d in enumerate(signals):
        wfdb.wrsamp(f"r{i}", fs=500, units=["mV"] * 12, sig_name=list(LEADS), d_signal=d.astype(np.int64),
                    fmt=["16"] * 12, adc_gain=[200.0] * 12, baseline=[0] * 12, write_dir=str(out))
    return (time.perf_counter() - start) / len(signals)


def time_own_writer(root: Path, paths: list[str], out: Path) -> float:
    """Seconds per record for ecgka's header + .dat writer alone, on the same signals."""
    signals = [to_digital(np.fromfile(root / f"{p}.dat", dtype="<i2").reshape(5000, 12) / 200.0) for p in paths]
    when = pd.Timestamp("2150-01-01 12:00").to_pydatetime()
    start = time.perf_counter()
    for i, d in enumerate(signals):
        write_record(out, 10000000 + i, 40000000 + i, when, d)
    return (time.perf_counter() - start) / len(signals)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300, help="approximate number of ECG records (default 300)")
    ap.add_argument("--workers", type=int, default=1, help="worker processes for the stand-in (default 1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ref", type=int, default=200, help="records re-written by each reference writer")
    args = ap.parse_args()
    subjects = max(1, round(args.n / RECORDS_PER_SUBJECT))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        summary = generate_standin(tmp / "standin", subjects=subjects, seed=args.seed, workers=args.workers)
        root = tmp / "standin" / ECG_DIR
        paths = pd.read_csv(root / "record_list.csv").path.tolist()[: args.ref]
        t_wrsamp = time_wrsamp(root, paths, tmp / "wrsamp")
        t_own = time_own_writer(root, paths, tmp / "own")
    n, secs, w = summary["records"], summary["seconds"], summary["workers"]
    per_record = secs * w / n  # core-seconds per record, everything included
    print(f"stand-in: {subjects} subjects, {n} records, {summary['lab_rows']} lab rows, {w} worker(s), {secs:.1f} s")
    print(f"  records/s/core (everything)      {n / (secs * w):8.1f}")
    print(f"  core-ms per record               {per_record * 1000:8.2f}")
    print(f"  wfdb.wrsamp ms per record        {t_wrsamp * 1000:8.2f}   (reference, same run, {len(paths)} records)")
    print(f"  ecgka writer ms per record       {t_own * 1000:8.2f}")
    print(f"  ratio stand-in / wrsamp          {per_record / t_wrsamp:8.2f}   (<1: faster than wfdb's writer alone)")
    print(f"  ratio ecgka writer / wrsamp      {t_own / t_wrsamp:8.2f}")
    print(f"  projected 10,000 records         {10000 * per_record / max(w, 1) / 60:8.1f} min on {w} core(s)")


if __name__ == "__main__":
    main()
