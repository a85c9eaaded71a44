"""What several benchmarks share: a scratch folder removed afterwards, and a stand-in to build from."""

from __future__ import annotations

import argparse
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def run_in_scratch(prefix: str, run: Callable[[argparse.Namespace, Path], None], args: argparse.Namespace) -> None:
    """``run(args, tmp)`` in a fresh temporary folder, removed afterwards."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        run(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def standin(args: argparse.Namespace, tmp: Path) -> Path:
    """``--standin`` if given, else a fresh stand-in of ``--subjects`` subjects (seed 0, one worker) in ``tmp``."""
    if args.standin is not None:
        return args.standin
    from ecgka.standin import generate_standin

    generate_standin(tmp / "standin", subjects=args.subjects, seed=0, workers=1)
    return tmp / "standin"


def evaluated_runs(root: Path, n: int, n_boot: int = 200) -> list[Path]:
    """``n`` evaluated run folders shaped like the paper's grid, without training: predictions are drawn
    directly (a vanilla-like pull toward 4.2 mmol/L, less with Dist Loss) and scored by the real
    ``compute_metrics``. The first 12 are the main table (6 methods, each without and with Dist Loss); the
    rest cycle through a batch-size ablation, a loss ablation and imbalance variants."""
    import json

    import numpy as np
    import pandas as pd

    from ecgka.catalog import DATASET_SCHEMA_VERSION, DatasetDir, RunDir
    from ecgka.catalog.info import DatasetInfo
    from ecgka.evaluation import EvalConfig, compute_metrics
    from ecgka.io import atomic_write_json
    from ecgka.labels import LabelGrid
    from ecgka.losses.methods import PAPER_ORDER

    grid = LabelGrid.preset("potassium")

    def labels(rng, size, balanced):
        k = rng.uniform(2.0, 7.5, size) if balanced else np.concatenate(
            [rng.normal(4.1, 0.45, int(size * 0.9)), rng.uniform(1.8, 8.5, size - int(size * 0.9))])
        return np.round(np.clip(k, 1.8, 8.5), 1).astype(np.float32)

    def manifest(folder: Path, seed: int, n_train: int) -> dict:
        rng = np.random.default_rng(seed)
        train = labels(rng, n_train, False)
        hist = {"lo": grid.lo, "step": grid.step, "counts": grid.counts(train).tolist()}
        data = {"schema_version": DATASET_SCHEMA_VERSION, "ecgka_version": "0.1.0", "fingerprint": "fpbench01",
                "parent": None, "config": {"seed": 0}, "inputs": {},
                "signal": {"leads": ["II"], "fs": 500, "n_samples": 5000, "unit": "mV"},
                "label": grid.to_dict(), "counts": {"train": n_train, "val": 400, "test": 400},
                "exclusions": {}, "labs_dropped": {}, "label_histograms": {"train": hist},
                "train_bin_counts": hist, "n_max": int(max(hist["counts"])),
                "shot_groups": grid.shot_groups(grid.counts(train)), "variants": []}
        atomic_write_json(DatasetDir(folder).manifest_path, data)
        return data

    def predictions(seed: int, shrink: float) -> pd.DataFrame:
        rng = np.random.default_rng(seed)
        k = labels(rng, 400, True)
        pred = k + shrink * (4.2 - k) + rng.normal(0, 0.3, k.size)
        return pd.DataFrame({"sample_id": np.arange(k.size), "subject_id": 10_000_000 + rng.integers(1, 121, k.size),
                             "label": k, "prediction": pred.astype(np.float32)})

    main = DatasetInfo.from_dict(manifest(root / "data", 0, 3000))
    variants = {v: DatasetInfo.from_dict(manifest(root / "data" / "variants" / v, i + 1, 3000 // (i + 2)))
                for i, v in enumerate(("ratio_10", "ratio_50", "ratio_100", "ratio_200"))}
    grid_runs = [(m, d, {}) for m in PAPER_ORDER for d in (False, True)]
    extra: list[tuple[str, bool, dict]] = []
    for i in range(max(0, n - len(grid_runs))):
        m, d = PAPER_ORDER[(i // 2) % len(PAPER_ORDER)], bool(i % 2)
        kind = i % 3
        if kind == 0:
            extra.append((m, d, {"group": "ablation_batch_size", "ablation": f"B={(16, 64, 256)[(i // 12) % 3]}"}))
        elif kind == 1:
            extra.append((m, True, {"group": "ablation_sequence_loss",
                                    "ablation": ("INV-L1", "INV-L2", "KL", "Wasserstein")[(i // 3) % 4]}))
        else:
            v = list(variants)[(i // 3) % len(variants)]
            extra.append((m, d, {"dataset_dir": f"data/variants/{v}", "variant": v}))
    out = []
    for i, (method, dist, more) in enumerate((grid_runs + extra)[:n]):
        rd = RunDir(root / f"run{i:03d}")
        run = {"name": f"run{i:03d}", "method": method, "dist_loss": dist, "stage": 2 if dist else 1,
               "dataset_dir": "data", "dataset_fingerprint": "fpbench01", "status": "complete", **more}
        atomic_write_json(rd.run_json, run)
        rd.log_path.write_text("".join(json.dumps({"epoch": e, "seconds": 10.0 + e, "samples_per_s": 300.0}) + "\n"
                                       for e in range(3)))
        shrink = 0.6 - 0.35 * dist - 0.02 * PAPER_ORDER.index(method)
        ds = variants[more["variant"]] if "variant" in more else main
        metrics = compute_metrics(predictions(i, shrink), predictions(i + 1000, shrink), ds,
                                  EvalConfig(n_boot=n_boot))
        atomic_write_json(rd.metrics_path("test"), metrics)
        out.append(rd.path)
    return out
