"""Speed of ``ecgka run --parallel``: a grid of N tiny stages sequentially and on local Dask clusters.

The grid is N independent stages that each work ``--work`` seconds (a sleep: the benchmark measures the
scheduling, not the work) and one final stage that reads them all, like the paper grid's report. The
reference is the sequential run of the same grid in the same process (the stages in-process, one after
another). For each run: the makespan, its ratio to the sequential one, and the scheduling overhead per
stage: the worker-seconds not spent working, ``(workers x makespan - total work) / stages``, which counts
the stage process start (Python, ecgka's imports), the Dask round trips and the runner's own bookkeeping
(fingerprints, markers, log.jsonl); the cluster's start-up is reported apart. Goal: under 1 s per stage.

    python benchmarks/bench_grid.py                     # 16 stages of 1 s: sequential, --parallel 2 and 4
    python benchmarks/bench_grid.py --stages 32 --work 0.5 --parallel 2 4 8
    python benchmarks/bench_grid.py --gpus 0 1 2 3      # on a GPU machine: one worker per GPU (GPU stages)

Prints one JSON line at the end (``"goal_met"``: every overhead under 1 s per stage).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import run_in_scratch  # noqa: E402

from ecgka.config import ConfigModel  # noqa: E402
from ecgka.pipeline import STAGE_KINDS, StageKind  # noqa: E402


class SleepOptions(ConfigModel):
    seconds: float = 1.0
    reads: list[str] = []  # the stages it waits for (``${s000}``...)
    index: int = 0


def _sleep(o: SleepOptions, out: Path) -> None:
    time.sleep(o.seconds)
    out.mkdir(parents=True, exist_ok=True)
    (out / "done").write_text(str(o.index))


def register() -> None:
    """The benchmark's stage kinds (``bench_sleep``, and ``bench_gpu_sleep`` that asks for a GPU), registered
    from this module imported by name (``bench_grid``), so that stage processes find them too."""
    for name, gpu in (("bench_sleep", False), ("bench_gpu_sleep", True)):
        if name not in STAGE_KINDS:
            STAGE_KINDS.register(name)(StageKind(SleepOptions, _sleep, lambda o, out: (out / "done").is_file(),
                                                 gpu=gpu))


def grid_spec(stages: int, work: float, gpu: bool):
    """N independent stages of ``work`` seconds and one that reads them all (a few ms of work)."""
    from ecgka.pipeline.spec import PipelineSpec

    kind = "bench_gpu_sleep" if gpu else "bench_sleep"
    entries = [{"id": f"s{i:03d}", "kind": kind, "options": {"seconds": work, "index": i}} for i in range(stages)]
    entries.append({"id": "final", "kind": "bench_sleep",
                    "options": {"seconds": 0.0, "reads": ["${" + e["id"] + "}" for e in entries]}})
    return PipelineSpec(name="bench_grid", stages=entries)


def run_grid(spec, out: Path, workers: int | None, devices: list[str] | None) -> dict:
    """One run of the grid: sequential (``workers`` None) or on a local cluster; its makespan and overhead."""
    from ecgka.pipeline import run_pipeline
    from ecgka.pipeline.clusters import local_cluster
    from ecgka.pipeline.executors import DaskExecutor

    work = sum(s.options["seconds"] for s in spec.stages)
    n = len(spec.stages)
    if workers is None:
        start = time.perf_counter()
        run_pipeline(spec, out, out.parent, log=lambda s: None)
        makespan = time.perf_counter() - start
        return {"workers": 1, "makespan_s": round(makespan, 2), "startup_s": 0.0,
                "overhead_per_stage_s": round((makespan - work) / n, 3)}
    start = time.perf_counter()
    cluster = local_cluster(workers, devices=devices or [])
    try:
        executor = DaskExecutor(cluster)
        startup = time.perf_counter() - start
        begun = time.perf_counter()
        run_pipeline(spec, out, out.parent, log=lambda s: None, executor=executor)
        makespan = time.perf_counter() - begun
    finally:
        cluster.close()
    return {"workers": workers, "gpus": len(devices or []), "makespan_s": round(makespan, 2),
            "startup_s": round(startup, 2), "overhead_per_stage_s": round((workers * makespan - work) / n, 3)}


def bench(args: argparse.Namespace, tmp: Path) -> None:
    importlib.import_module("bench_grid")  # registers the stage kinds from a module stage processes import
    spec = grid_spec(args.stages, args.work, gpu=bool(args.gpus))
    print(f"grid: {args.stages} independent stages of {args.work} s and one that reads them all")
    runs = {"sequential": run_grid(spec, tmp / "seq", None, None)}
    reference = runs["sequential"]["makespan_s"]
    for n in args.parallel:
        runs[f"parallel_{n}"] = run_grid(spec, tmp / f"par{n}", n, None)
    if args.gpus:
        runs[f"gpus_{len(args.gpus)}"] = run_grid(spec, tmp / "gpus", len(args.gpus), list(args.gpus))
    for name, r in runs.items():
        r["ratio_to_sequential"] = round(r["makespan_s"] / reference, 3)
        r["ideal_ratio"] = round(1 / r["workers"], 3)
        print(f"{name:<14} makespan {r['makespan_s']:7.2f} s  x{r['ratio_to_sequential']:.3f} of sequential "
              f"(ideal x{r['ideal_ratio']:.3f})  overhead {r['overhead_per_stage_s']:.3f} s/stage  "
              f"cluster start {r['startup_s']:.2f} s")
    goal = all(r["overhead_per_stage_s"] < 1.0 for r in runs.values())
    print(json.dumps({"stages": args.stages + 1, "work_s": args.work, "runs": runs, "goal_met": goal}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stages", type=int, default=16, help="independent stages (default 16)")
    ap.add_argument("--work", type=float, default=1.0, help="seconds each stage works (default 1.0)")
    ap.add_argument("--parallel", type=int, nargs="*", default=[2, 4], help="local CPU workers (default 2 4)")
    ap.add_argument("--gpus", nargs="*", default=[], help="GPU devices: also a run with one worker per GPU")
    args = ap.parse_args()
    run_in_scratch("ecgka-bench-grid-", bench, args)


if __name__ == "__main__":
    main()
else:  # imported by name: by main() here, by a stage process, by a spawned Dask worker
    register()
