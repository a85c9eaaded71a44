"""Start-up time of the ``ecgka`` command against ``python -c pass``, measured in the same run.

Each command is a fresh interpreter (what a user pays per command), timed best of N wall-clock runs:
``python -c pass`` (the reference), ``ecgka --help``, ``ecgka train --help``, ``ecgka evaluate --help``,
a ``train`` config error (``batchsize=3``), a ``train`` optimiser error (``optim.lr=-0.1``) and an
``evaluate`` config error. Prints seconds and the ratio to the reference, and the heavy modules each
command imported (none of torch, pandas, pyarrow, scipy, sklearn should load to print help or report a
config error). Usage: python benchmarks/bench_startup.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "pandas", "pyarrow", "scipy", "sklearn", "numpy")
# what importing these costs is what the lazy imports save; listed by the probe below
PROBE = ("import sys, runpy; sys.argv = ['ecgka', *sys.argv[1:]]\n"
         "try:\n    from ecgka.cli import main; code = main(sys.argv[1:])\nexcept SystemExit as e:\n    code = e.code\n"
         f"sys.stderr.write('HEAVY:' + ','.join(m for m in {HEAVY!r} if m in sys.modules) + chr(10))\n")


def commands(tmp: Path) -> dict[str, list[str]]:
    train = ["train", "--data", str(tmp / "no-data"), "--out", str(tmp / "run")]
    return {
        "python -c pass": [sys.executable, "-c", "pass"],
        "ecgka --help": [sys.executable, "-m", "ecgka", "--help"],
        "ecgka train --help": [sys.executable, "-m", "ecgka", "train", "--help"],
        "ecgka evaluate --help": [sys.executable, "-m", "ecgka", "evaluate", "--help"],
        "train config error": [sys.executable, "-m", "ecgka", *train, "batchsize=3"],
        "train optim.lr=-0.1": [sys.executable, "-m", "ecgka", *train, "optim.lr=-0.1"],
        "evaluate config error": [sys.executable, "-m", "ecgka", "evaluate", str(tmp / "run"), "nosuch=1",
                                  "--data", str(tmp / "no-data")],
    }


def best_of(cmd: list[str], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        best = min(best, time.perf_counter() - start)
    return best


def heavy_imports(cmd: list[str]) -> str:
    """The heavy modules a command imported (re-run in-process under a probe)."""
    if cmd[1:3] != ["-m", "ecgka"]:
        return ""
    res = subprocess.run([sys.executable, "-c", PROBE, *cmd[3:]], cwd=REPO, capture_output=True, text=True)
    found = [line[6:] for line in res.stderr.splitlines() if line.startswith("HEAVY:")]
    return found[-1] if found else "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per command; the best is kept")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_startup_") as tmp:
        cmds = commands(Path(tmp))
        times = {name: best_of(cmd, args.repeat) for name, cmd in cmds.items()}
        ref = times["python -c pass"]
        print(f"{'command':<24} {'best s':>8} {'x python':>9}  heavy modules imported")
        for name, seconds in times.items():
            print(f"{name:<24} {seconds:8.3f} {seconds / ref:9.1f}  {heavy_imports(cmds[name]) or '-'}")


if __name__ == "__main__":
    main()
