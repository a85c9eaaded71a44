"""Training speed: model samples/s per preset, Dist Loss vs MSE step time, loader vs model throughput.

CPU (always): a training epoch through ``train_run`` for each preset on a generated 500 Hz x 10 s dataset
(samples/s from the run's log), the step time of end-to-end Dist Loss against MSE in the same process,
and the shard loader's samples/s against what the model consumes.
Compile warm-up (CPU with inductor, and GPU): the first step's seconds (tracing + compiling the backbone)
against the steady-state step, eager against compiled, in the same run.
GPU (when CUDA is present): the small preset at batch 512, eager fp32 against bf16 autocast +
torch.compile, and the loader against the GPU's consumption.

    python benchmarks/bench_train.py [--n 512] [--batch 64] [--presets small ecg] [--gpu-steps 30] [--no-compile]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from shard_factory import write_dataset  # noqa: E402

from ecgka.catalog import DatasetDir, RunDir  # noqa: E402
from ecgka.labels import LabelGrid  # noqa: E402
from ecgka.training import load_train_config, train_run  # noqa: E402
from ecgka.training.build import Runtime, build_criterion, build_model, build_optimizer, wrap_network  # noqa: E402
from ecgka.training.distributed import DistInfo  # noqa: E402
from ecgka.training.loader import epoch_batches, iterate_batches, to_device  # noqa: E402
from ecgka.training.shard_loading import load_split  # noqa: E402
from ecgka.training.step import train_step  # noqa: E402


def epoch_throughput(data: Path, out: Path, preset: str, batch: int) -> dict:
    cfg = load_train_config(None, [f"model.preset={preset}", f"batch_size={batch}", "epochs=1",
                                   "progress=false", "device=cpu"])
    train_run(cfg, data, out)
    rec = RunDir(out).read_log()[0]
    return {"samples_per_s": rec["samples_per_s"], "epoch_s": rec["train_seconds"],
            "data_wait_s": rec["data_wait_seconds"]}


def step_times(data: Path, preset: str, batch: int, steps: int, device: str = "cpu", bf16: bool = False,
               compile_: bool = False, methods=("vanilla", "dist_loss"), first: bool = False) -> dict:
    """Median seconds per training step for each method (same model, same batches, interleaved), through
    the trainer's own network (``wrap_network``: bf16 backbone + float32 head, compiled backbone).
    ``first``: ``{method: (first step seconds, median steady-state seconds)}`` instead."""
    train = load_split(data, "train")
    grid = LabelGrid.from_manifest(DatasetDir(data).read_manifest())
    batches = epoch_batches(len(train), batch, seed=0, epoch=0)
    xs = [to_device(x, y, torch.device(device)) for x, y in iterate_batches(train, batches[:4], [0])]
    runtime = Runtime(torch.device(device), bf16=bf16, compile=compile_)
    torch._dynamo.reset()
    setups = {}
    for name in methods:
        cfg = load_train_config(None, [f"model.preset={preset}", f"method.name={name}", f"batch_size={batch}"])
        torch.manual_seed(0)
        model = build_model(cfg, 1).to(device)
        criterion = build_criterion(cfg, train.labels, grid, batch).to(device)
        net = wrap_network(model, criterion, runtime, DistInfo()).train()
        setups[name] = (net, criterion, build_optimizer(cfg, model, criterion))
    times: dict[str, list[float]] = {name: [] for name in methods}
    for i in range(steps + 3):
        for name, (net, crit, opt) in setups.items():
            x, y = xs[i % len(xs)]
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = train_step(net, crit, opt, x, y, epoch=0)
            float(out["loss"])
            if device == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - t0)
    steady = {name: float(np.median(t[3:])) for name, t in times.items()}  # warm-up (compilation) excluded
    return {name: (times[name][0], steady[name]) for name in methods} if first else steady


def compile_warmup(data: Path, preset: str, batch: int, steps: int, device: str = "cpu", bf16: bool = False
                   ) -> None:
    """Print the first step against the steady-state step, eager and compiled (MSE), in this run."""
    for label, compiled in (("eager", False), ("compiled", True)):
        try:
            (t_first, t_steady), = step_times(data, preset, batch, steps, device=device, bf16=bf16,
                                              compile_=compiled, methods=("vanilla",), first=True).values()
        except Exception as exc:  # e.g. no C++ compiler for inductor on this machine
            print(f"compile warm-up {label:>8}: not measured ({type(exc).__name__}: {str(exc)[:120]})")
            continue
        print(f"compile warm-up {label:>8} {preset} on {device}: first step {t_first:7.2f} s, "
              f"steady {t_steady * 1e3:8.1f} ms/step (first = {t_first / t_steady:.0f} steady steps)")


def loss_only_times(data: Path, batch: int = 512, reps: int = 200, device: str = "cpu") -> dict[str, float]:
    """Median forward+backward seconds of the criterion alone on a [batch] prediction vector."""
    train = load_split(data, "train")
    grid = LabelGrid.from_manifest(DatasetDir(data).read_manifest())
    gen = torch.Generator().manual_seed(0)
    y = torch.from_numpy(train.labels[torch.randint(len(train), (batch,), generator=gen).numpy()]).to(device)
    out = {}
    for name in ("vanilla", "dist_loss"):
        cfg = load_train_config(None, [f"method.name={name}", f"batch_size={batch}"])
        crit = build_criterion(cfg, train.labels, grid, batch).to(device)
        times = []
        for _ in range(reps):
            pred = (y + torch.randn(batch, generator=gen).to(device)).requires_grad_(True)
            t0 = time.perf_counter()
            crit(pred, y)["loss"].backward()
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        out[name] = float(np.median(times))
    return out


def loader_throughput(data: Path, batch: int, n_batches: int | None = None, pin: bool = False) -> float:
    train = load_split(data, "train")
    batches = epoch_batches(len(train), batch, seed=1, epoch=0)[:n_batches]
    t0 = time.perf_counter()
    rows = sum(len(y) for _, y in iterate_batches(train, batches, [0], pin_memory=pin))
    return rows / (time.perf_counter() - t0)


def cpu_report(args, data: Path, tmp: Path) -> None:
    print(f"== CPU ({torch.get_num_threads()} threads), {args.n} samples x 5000, batch {args.batch}")
    consumption = {}
    for preset in args.presets:
        res = epoch_throughput(data, tmp / f"run-{preset}", preset, args.batch)
        consumption[preset] = res["samples_per_s"]
        print(f"train epoch  {preset:>6}: {res['samples_per_s']:8.1f} samples/s  (epoch {res['epoch_s']:.1f} s, "
              f"waiting for data {res['data_wait_s']:.2f} s)")
    for preset in args.presets:
        t = step_times(data, preset, args.batch, args.steps)
        print(f"step time    {preset:>6}: MSE {t['vanilla'] * 1e3:7.1f} ms, Dist Loss {t['dist_loss'] * 1e3:7.1f} ms "
              f"-> Dist Loss / MSE = {t['dist_loss'] / t['vanilla']:.3f}")
    if args.compile:
        compile_warmup(data, args.presets[0], args.batch, args.steps)
    t = loss_only_times(data)
    print(f"loss only  B=512: MSE {t['vanilla'] * 1e3:.3f} ms, Dist Loss {t['dist_loss'] * 1e3:.3f} ms fwd+bwd "
          f"(+{(t['dist_loss'] - t['vanilla']) * 1e3:.3f} ms per step)")
    for batch in sorted({args.batch, 512}):
        rate = loader_throughput(data, batch)
        ratios = ", ".join(f"{rate / c:.1f}x {p}" for p, c in consumption.items())
        print(f"loader  batch {batch:>4}: {rate:9.1f} samples/s  = {ratios} model consumption")


def gpu_report(args, data: Path) -> None:
    name = torch.cuda.get_device_name()
    print(f"== GPU {name}: small preset, batch 512, {args.gpu_steps} timed steps")
    eager = step_times(data, "small", 512, args.gpu_steps, device="cuda", methods=("vanilla", "dist_loss"))
    fast = step_times(data, "small", 512, args.gpu_steps, device="cuda", bf16=True, compile_=True,
                      methods=("vanilla", "dist_loss"))
    for label, t in (("eager fp32", eager), ("bf16+compile", fast)):
        print(f"{label:>13}: MSE {512 / t['vanilla']:9.0f} samples/s, Dist Loss {512 / t['dist_loss']:9.0f} "
              f"samples/s (Dist Loss / MSE step = {t['dist_loss'] / t['vanilla']:.3f})")
    print(f"speed-up bf16+compile / eager fp32 (MSE): {eager['vanilla'] / fast['vanilla']:.2f}x")
    if args.compile:
        compile_warmup(data, "small", 512, args.gpu_steps, device="cuda", bf16=True)
    rate = loader_throughput(data, 512, pin=True)
    print(f"loader batch 512 (pinned): {rate:9.0f} samples/s = {rate * fast['vanilla'] / 512:.2f}x the "
          "bf16+compile consumption")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=512, help="training samples of the generated dataset")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per method (CPU)")
    parser.add_argument("--presets", nargs="+", default=["small", "ecg"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--gpu-steps", type=int, default=30)
    parser.add_argument("--gpu-only", action="store_true")
    parser.add_argument("--no-compile", dest="compile", action="store_false",
                        help="skip the compile warm-up measurement (inductor compiles for tens of seconds)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        n = max(args.n, 4096) if torch.cuda.is_available() else args.n
        data = write_dataset(Path(tmp) / "data", n_train=n, n_val=64, n_test=16, n_samples=5000, fs=500,
                             shard_rows=512)
        if not args.gpu_only:
            cpu_report(args, data, Path(tmp))
        if torch.cuda.is_available():
            gpu_report(args, data)
        else:
            print("== GPU: no CUDA device here (run on a GPU machine for the bf16 + compile comparison)")


if __name__ == "__main__":
    main()
