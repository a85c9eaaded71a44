"""Time and size of ``ecgka report`` at the scale of the paper's grid (about 100 runs).

    python benchmarks/bench_report.py --runs 104

Builds ``--runs`` evaluated runs without training (``_common.evaluated_runs``: predictions drawn directly,
metrics from the real ``compute_metrics``), then times ``write_report`` alone and prints one JSON line:
``{"runs": N, "seconds": <report build>, "bytes": <report folder size>, "html_bytes": ..., "setup_seconds": ...}``.
Goal (docs/report.md): 104 runs in under 30 s on 2 cores and under 3 MB.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import evaluated_runs, run_in_scratch  # noqa: E402


def _run(args: argparse.Namespace, tmp: Path) -> None:
    from ecgka.report import write_report

    t0 = time.perf_counter()
    runs = evaluated_runs(tmp, args.runs)
    setup = time.perf_counter() - t0
    t0 = time.perf_counter()
    html = write_report(runs, tmp / "report")
    seconds = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in (tmp / "report").rglob("*") if p.is_file())
    print(json.dumps({"runs": args.runs, "seconds": round(seconds, 2), "bytes": size,
                      "html_bytes": html.stat().st_size, "setup_seconds": round(setup, 2)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=104)
    run_in_scratch("ecgka-bench-report-", _run, parser.parse_args())


if __name__ == "__main__":
    main()
