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
    python benchmarks/bench_grid.py --estimate          # the paper grid: one H200 against 8, from epoch rates

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


def stage_cost(stage, a: argparse.Namespace, epoch_s: float) -> float:
    """Seconds one GPU spends on a stage of the paper grid, from measured per-epoch rates (``--epoch-s``):
    a training from scratch runs ``--epochs`` full epochs (FDS one more forward pass per epoch: x4/3); a
    two-stage one (``init:``, the head alone trains) ``--head-factor`` of that; an evaluation a forward pass
    over val and test; each stage also pays ``--stage-start`` (process, torch import, compile warm-up)."""
    if stage.kind == "train":
        config = str(stage.options.get("config", ""))
        factor = a.head_factor if stage.options.get("init") else (4 / 3 if "fds" in config else 1.0)
        return a.stage_start + a.epochs * epoch_s * factor
    if stage.kind == "evaluate":
        return a.stage_start + a.eval_s
    return a.report_s if stage.kind == "report" else 0.0  # the build: CPU, the same in both


def makespan(order: list[str], graph: dict[str, set[str]], cost: dict[str, float], gpus: int) -> float:
    """List scheduling as the runner does it: each stage, in file order among the ready ones, on the first
    free GPU once the stages it waits for have ended."""
    free, end = [0.0] * gpus, {}
    for sid in order:
        ready = max((end[d] for d in graph[sid]), default=0.0)
        slot = min(range(gpus), key=lambda i: max(free[i], ready))
        end[sid] = max(free[slot], ready) + cost[sid]
        free[slot] = end[sid]
    return max(end.values())


def estimate(a: argparse.Namespace) -> dict:
    """The paper grid (pipelines/ecg_ka_dir_paper.yaml, its real stage graph) on one GPU and on ``--gpus-n``."""
    import tempfile

    from ecgka.pipeline import load_pipeline
    from ecgka.pipeline.runner import stage_graph
    from ecgka.resources import find_pipeline

    pipeline = find_pipeline(Path("ecg_ka_dir_paper"))
    with tempfile.TemporaryDirectory() as tmp:
        spec = load_pipeline(pipeline, {"ecg_root": tmp, "labs": tmp})
        graph = stage_graph(spec, Path(tmp) / "out", pipeline.resolve().parent.parent)
    order = [s.id for s in spec.stages]
    # n GPUs training at once share the CPU loader: an epoch is no faster than the loader's share allows
    shared_epoch = max(a.epoch_s, a.samples * a.gpus_n / a.loader)
    one = makespan(order, graph, {s.id: stage_cost(s, a, a.epoch_s) for s in spec.stages}, 1)
    many = makespan(order, graph, {s.id: stage_cost(s, a, shared_epoch) for s in spec.stages}, a.gpus_n)
    kinds = {k: sum(s.kind == k for s in spec.stages) for k in ("train", "evaluate")}
    heads = sum(s.kind == "train" and bool(s.options.get("init")) for s in spec.stages)
    return {"stages": len(order), "trainings": kinds["train"], "two_stage": heads, "evaluations": kinds["evaluate"],
            "epoch_s": a.epoch_s, "epoch_s_shared": round(shared_epoch, 1), "one_gpu_h": round(one / 3600, 2),
            f"gpus_{a.gpus_n}_h": round(many / 3600, 2), "speedup": round(one / many, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stages", type=int, default=16, help="independent stages (default 16)")
    ap.add_argument("--work", type=float, default=1.0, help="seconds each stage works (default 1.0)")
    ap.add_argument("--parallel", type=int, nargs="*", default=[2, 4], help="local CPU workers (default 2 4)")
    ap.add_argument("--gpus", nargs="*", default=[], help="GPU devices: also a run with one worker per GPU")
    est = ap.add_argument_group("--estimate: the paper grid on GPUs, from measured rates (no run)")
    est.add_argument("--estimate", action="store_true", help="print the estimate and exit")
    est.add_argument("--epoch-s", type=float, default=17.0,
                     help="seconds of one training epoch over the 365 k ECGs (default 17: small Net1D, "
                          "compiled, bf16, one H200: 21.8 k samples/s)")
    est.add_argument("--epochs", type=int, default=10)
    est.add_argument("--head-factor", type=float, default=0.4,
                     help="a two-stage (head-only) training's cost against a full one (default 0.4: the "
                          "forward pass dominates)")
    est.add_argument("--stage-start", type=float, default=60.0,
                     help="seconds each GPU stage pays to start (process, torch, compile warm-up; default 60)")
    est.add_argument("--eval-s", type=float, default=15.0, help="seconds of one evaluation (default 15)")
    est.add_argument("--report-s", type=float, default=120.0, help="seconds of the report (default 120)")
    est.add_argument("--samples", type=float, default=365_000, help="training samples per epoch")
    est.add_argument("--loader", type=float, default=126_000,
                     help="samples/s the CPU loader feeds in all (default 126 k: pinned, 16 cores)")
    est.add_argument("--gpus-n", type=int, default=8, help="GPUs of the parallel estimate (default 8)")
    args = ap.parse_args()
    if args.estimate:
        print(json.dumps(estimate(args)))
        return
    run_in_scratch("ecgka-bench-grid-", bench, args)


if __name__ == "__main__":
    main()
else:  # imported by name: by main() here, by a stage process, by a spawned Dask worker
    register()
