"""A small stand-in built into an ECG-Ka-DIR dataset, and tiny runs trained and evaluated on it: the shared
set-up of the end-to-end tests of predict, export and the model store."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# the tiniest Net1D, one CPU thread, one epoch: a run in seconds
TINY_RUN = ["model.preset=tiny", "batch_size=32", "progress=false", "threads=1", "epochs=1"]


def built_standin(root: str | Path, subjects: int = 60, seed: int = 3) -> tuple[Path, Path]:
    """``ecgka synth`` then ``ecgka build`` (the shipped ECG-Ka-DIR config, 3 ECGs per label bin in val and
    test) under ``root``: (the stand-in's ECG folder, the dataset folder)."""
    from ecgka.config import load_config
    from ecgka.data.build import build_dataset
    from ecgka.data.config import BuildConfig
    from ecgka.standin import generate_standin

    root = Path(root)
    generate_standin(root / "standin", subjects=subjects, seed=seed, workers=1)
    cfg = load_config(BuildConfig, str(REPO / "configs/data/ecg_ka_dir.yaml"), ["split.per_bin_cap=3"])
    build_dataset(root / "standin/ecg", [root / "standin/hosp/labevents.csv.gz"], root / "ds", cfg, workers=1)
    return root / "standin/ecg", root / "ds"


def trained_and_evaluated(data: Path, run: Path, overrides: list[str] | tuple[str, ...] = ()) -> Path:
    """A tiny run (``TINY_RUN`` then ``overrides``) trained on ``data`` and evaluated on its test split."""
    from ecgka.evaluation import EvalConfig, evaluate_run
    from ecgka.training import load_train_config, train_run

    train_run(load_train_config(None, [*TINY_RUN, *overrides]), data, run)
    evaluate_run(run, data, "test", EvalConfig(n_boot=20))
    return run
