"""Dist Loss cost per call (forward + backward) next to plain MSE, and relative to a Net1D training step.

    .venv/bin/python benchmarks/bench_losses.py                 # CPU (and CUDA when present), B = 512
    .venv/bin/python benchmarks/bench_losses.py --device cuda --batch 4096 --step-batch 512

Cases, all measured in the same run: plain MSE (the reference), Dist Loss (INV-L2, pseudo-label weights)
with the soft (torchsort), hard (torch.sort) and auto sorters, and the released design (numpy soft sort
with a CPU round trip every call). Then one Net1D training step (Adam, MSE) at ``--step-batch``, scaled
linearly to ``--batch`` when smaller, to express Dist Loss as a fraction of a step; without
``ecgka.models`` a Conv1d stand-in step is timed instead (and said so).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from ecgka.losses import DistLoss

RANGE = (1.5, 10.0, 0.1)


def potassium_like_labels(n: int = 20000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    labels = np.concatenate([rng.normal(4.2, 0.55, n), rng.uniform(2.0, 8.0, n // 50)])
    return np.clip(np.round(labels, 1), *RANGE[:2])


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn, device: torch.device, repeat: int, rounds: int = 5) -> float:
    """Fastest round's mean seconds per call, after a warm-up (the least disturbed by other load)."""
    return time_interleaved({"f": fn}, device, repeat, rounds)["f"]


def time_interleaved(cases: dict, device: torch.device, repeat: int, rounds: int = 7) -> dict[str, float]:
    """Rounds visit every case in turn, so background load hits all alike; min over rounds per case."""
    for fn in cases.values():
        for _ in range(3):
            fn()
    sync(device)
    best = {name: float("inf") for name in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            start = time.perf_counter()
            for _ in range(repeat):
                fn()
            sync(device)
            best[name] = min(best[name], (time.perf_counter() - start) / repeat)
    return best


def loss_cases(labels: np.ndarray, batch: int, device: torch.device) -> dict:
    """name -> callable doing one forward + backward at batch size ``batch``."""
    g = torch.Generator().manual_seed(1)
    target = torch.tensor(labels[:batch], dtype=torch.float32, device=device)
    pred = (4.2 + 0.6 * torch.randn(batch, generator=g)).to(device).requires_grad_(True)

    def step(loss_fn):
        def run():
            pred.grad = None
            loss_fn(pred, target).backward()
        return run

    cases = {"mse": step(F.mse_loss)}
    for sorter in ("soft", "hard", "auto"):
        cases[f"dist_loss[{sorter}]"] = step(DistLoss(labels, RANGE, batch, sorter=sorter).to(device))
    released = DistLoss(labels, RANGE, batch, sorter="released", weight_alignment="batch_order").to(device)
    cases["released design"] = step(released)
    return cases


def model_step(step_batch: int, preset: str, device: torch.device):
    """(description, callable) for one training step of Net1D, or of a Conv1d stand-in without ecgka.models."""
    x = torch.randn(step_batch, 1, 5000, device=device)
    y = 4.2 + torch.randn(step_batch, device=device)
    try:
        from ecgka.models import create_model

        model, name = create_model("net1d", preset=preset).to(device), f"Net1D {preset}"
    except ImportError:
        model = torch.nn.Sequential(torch.nn.Conv1d(1, 32, 16, stride=4), torch.nn.ReLU(),
                                    torch.nn.Conv1d(32, 64, 16, stride=4), torch.nn.ReLU(),
                                    torch.nn.AdaptiveAvgPool1d(1), torch.nn.Flatten(), torch.nn.Linear(64, 1),
                                    torch.nn.Flatten(0)).to(device)
        name = "Conv1d stand-in (ecgka.models missing)"
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def run():
        optimizer.zero_grad(set_to_none=True)
        F.mse_loss(model(x), y).backward()
        optimizer.step()

    return name, run


def bench_device(device: torch.device, args) -> None:
    labels = potassium_like_labels()
    print(f"\n== {device} (threads {torch.get_num_threads()}), loss forward+backward at B={args.batch}")
    results = time_interleaved(loss_cases(labels, args.batch, device), device, args.repeat)
    mse, released = results["mse"], results["released design"]
    print(f"{'case':<18}{'ms/call':>10}{'x MSE':>9}{'released / case':>17}")
    for name, seconds in results.items():
        print(f"{name:<18}{seconds * 1e3:>10.3f}{seconds / mse:>9.2f}{released / seconds:>17.2f}")
    step_batch = min(args.step_batch, args.batch)
    name, step = model_step(step_batch, args.preset, device)
    step_seconds = time_call(step, device, repeat=1, rounds=args.step_rounds) * args.batch / step_batch
    scaled = "" if step_batch == args.batch else f" (measured at B={step_batch}, scaled x{args.batch / step_batch:g})"
    print(f"\n{name} training step at B={args.batch}: {step_seconds * 1e3:.1f} ms{scaled}")
    for case in ("dist_loss[soft]", "dist_loss[hard]", "dist_loss[auto]", "released design"):
        extra = results[case] - mse  # what the loss adds over the MSE the step already contains
        print(f"  {case:<18} adds {extra * 1e3:8.3f} ms = {100 * extra / step_seconds:7.3f} % of the step "
              f"(dist_loss_time / step_time = {results[case] / step_seconds:.2e})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=30, help="calls per timing round")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--step-batch", type=int, default=None, help="Net1D step batch (default 32 CPU, 512 CUDA)")
    parser.add_argument("--step-rounds", type=int, default=3)
    parser.add_argument("--preset", default="small", help="Net1D preset for the step")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    devices = ["cpu", "cuda"] if args.device == "auto" else [args.device]
    for name in devices:
        if name == "cuda" and not torch.cuda.is_available():
            print("\n(CUDA not available: skipped)")
            continue
        device = torch.device(name)
        step_batch = args.step_batch or (512 if device.type == "cuda" else 32)
        bench_device(device, argparse.Namespace(**{**vars(args), "step_batch": step_batch}))


if __name__ == "__main__":
    main()
