"""Lab extraction throughput (rows/s) and peak memory on generated labevents files of growing size.

Writes labevents-format ``.csv.gz`` files (~4 % potassium rows, like MIMIC-IV) into a temp dir, then
runs ``extract_potassium`` on each in a fresh process and reports rows/s and peak RSS above the
process's baseline: memory must stay flat as the file grows (only potassium rows are kept).
Usage: python benchmarks/bench_labs.py [--sizes 1000000 5000000] [--keep DIR]  (needs ``ecgka[bench]``)
"""

from __future__ import annotations

import argparse
import gzip
import multiprocessing as mp
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

COLUMNS = ["labevent_id", "subject_id", "hadm_id", "specimen_id", "itemid", "order_provider_id", "charttime",
           "storetime", "value", "valuenum", "valueuom", "ref_range_lower", "ref_range_upper", "flag", "priority",
           "comments"]


def write_labevents(path: Path, n_rows: int, seed: int = 0, block: int = 500_000) -> None:
    """A labevents-format csv.gz of ``n_rows`` rows, written block by block (bounded memory)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(seed)
    others = np.array([50882, 50902, 50912, 50931, 50960, 50983, 51221, 51265, 51301], np.int64)
    with gzip.open(path, "wb", compresslevel=1) as sink:  # fast to write; reading cost is what we measure
        for start in range(0, n_rows, block):
            n = min(block, n_rows - start)
            is_k = rng.random(n) < 0.04
            item = np.where(is_k, rng.choice([50971, 50822], n, p=[0.85, 0.15]), rng.choice(others, n))
            val = np.round(np.where(is_k, rng.normal(4.2, 0.6, n), rng.uniform(1, 200, n)), 1)
            secs = pa.array(rng.integers(5_680_000_000, 5_680_000_000 + 20 * 365 * 86400, n), pa.int64())
            charttime = pc.strftime(secs.cast(pa.timestamp("s")), format="%Y-%m-%d %H:%M:%S")
            comments = pa.array(np.where(rng.random(n) < 0.02, "HEMOLYSIS FALSELY ELEVATES K", ""))
            valstr = pc.if_else(pa.array(rng.random(n) < 0.005), "", pa.array(val).cast(pa.string()))
            table = pa.table({
                "labevent_id": np.arange(start, start + n), "subject_id": rng.integers(10_000_000, 19_999_999, n),
                "hadm_id": rng.integers(20_000_000, 29_999_999, n), "specimen_id": rng.integers(1, 99_999_999, n),
                "itemid": item, "order_provider_id": pa.nulls(n, pa.string()), "charttime": charttime,
                "storetime": charttime, "value": valstr, "valuenum": valstr, "valueuom": ["mEq/L"] * n,
                "ref_range_lower": ["3.3"] * n, "ref_range_upper": ["5.1"] * n, "flag": pa.nulls(n, pa.string()),
                "priority": ["ROUTINE"] * n, "comments": comments,
            })
            pacsv.write_csv(table, sink, write_options=pacsv.WriteOptions(include_header=start == 0))


def _status_kb(field: str) -> float:
    """Current (VmRSS) or peak (VmHWM) resident memory of this process, in KiB."""
    if field == "VmHWM":
        import resource

        return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux
    import psutil

    return psutil.Process().memory_info().rss / 1024


def _require_psutil() -> None:
    """psutil (current RSS) is the optional ``bench`` extra: stop with the install line when it is missing."""
    try:
        import psutil  # noqa: F401
    except ImportError:
        raise SystemExit("bench_labs.py measures memory with psutil: pip install 'ecgka[bench]'") from None


def _measure(path: str, queue) -> None:
    from ecgka.data.config import LabsConfig
    from ecgka.data.labs import ItemSelection, extract_potassium

    base = _status_kb("VmRSS")
    start = time.perf_counter()
    table, dropped, seen = extract_potassium([Path(path)], LabsConfig(), ItemSelection((50971,), (50822,)))
    seconds = time.perf_counter() - start
    peak = _status_kb("VmHWM")
    import pyarrow as pa

    arrow_peak = pa.default_memory_pool().max_memory()
    queue.put({"rows": seen["rows"], "kept": len(table), "seconds": seconds, "base_mb": base / 1024,
               "peak_mb": peak / 1024, "arrow_mb": arrow_peak / 2**20, "table_mb": sum(getattr(table, f).nbytes for f in
                                                       ("subject_id", "time_s", "itemid", "value")) / 2**20})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 5_000_000])
    parser.add_argument("--keep", type=Path, help="folder to keep the generated files in (default: a temp dir)")
    args = parser.parse_args()
    _require_psutil()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="bench_labs_"))
    folder.mkdir(parents=True, exist_ok=True)
    ctx = mp.get_context("spawn")
    results = []
    try:
        for n in args.sizes:
            path = folder / f"labevents_{n}.csv.gz"
            if not path.exists():
                t0 = time.perf_counter()
                write_labevents(path, n)
                print(f"generated {n:,} rows ({path.stat().st_size / 2**20:.0f} MB gz) in {time.perf_counter() - t0:.1f} s")
            queue = ctx.Queue()
            proc = ctx.Process(target=_measure, args=(str(path), queue))
            proc.start()
            res = queue.get()
            proc.join()
            results.append(res)
            print(f"{res['rows']:>11,} rows  {res['rows'] / res['seconds']:>12,.0f} rows/s  kept {res['kept']:>9,} "
                  f"({res['table_mb']:.1f} MB)  peak RSS {res['peak_mb']:.0f} MB (baseline {res['base_mb']:.0f} MB, "
                  f"+{res['peak_mb'] - res['base_mb']:.0f} MB; Arrow pool peak {res['arrow_mb']:.0f} MB)")
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)
    if len(results) >= 2:
        a, b = results[0], results[-1]
        grow = (b["peak_mb"] - b["base_mb"]) / max(1e-9, a["peak_mb"] - a["base_mb"])
        print(f"file x{b['rows'] / a['rows']:.1f} -> working memory x{grow:.2f} (kept potassium table grows "
              f"{b['table_mb'] - a['table_mb']:.1f} MB; everything else is bounded by the CSV block size)")
        rate = b["rows"] / b["seconds"]
        print(f"estimate for MIMIC-IV labevents (158 M rows) at {rate:,.0f} rows/s: {158e6 / rate / 60:.1f} min")


if __name__ == "__main__":
    main()
