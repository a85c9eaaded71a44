"""Speed of the age image pipeline: images per second decoded + transformed (train, 224 x 224), Parquet
shards against loose JPEG files, measured in the same run; plus the up-front file check per image; and
the loader's rate against the rate a GPU consumes images (the paper's Table 3: an AgeDB-DIR vanilla run,
90 epochs over 12,208 training images, took about 48 min on an RTX 3090, i.e. about 381 images/s).

The images are face-sized JPEGs (180-400 px a side, smooth texture, quality 90, about AgeDB's file sizes)
written in a temporary folder. The shard read includes opening the shards (reading all their bytes).

    python benchmarks/bench_age_images.py              # 400 images, about half a minute here
    python benchmarks/bench_age_images.py --n 2000 --workers 2
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
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from ecgka.age.dataset import open_age_split  # noqa: E402
from ecgka.age.shards import open_age_shards, pack_age_shards  # noqa: E402

# the GPU side (paper, Table 3): AgeDB-DIR vanilla, 90 epochs x 12,208 training images in about 48 min (RTX 3090)
GPU_EPOCHS, GPU_TRAIN_IMAGES, GPU_MINUTES = 90, 12_208, 48.0
GPU_RATE = GPU_EPOCHS * GPU_TRAIN_IMAGES / (GPU_MINUTES * 60)  # images/s, about 381


def write_images(root: Path, n: int, seed: int) -> Path:
    """``n`` JPEGs under ``root/AgeDB`` and a split CSV (all train); returns the CSV."""
    rng = np.random.default_rng(seed)
    (root / "AgeDB").mkdir(parents=True)
    rows = []
    for k in range(n):
        h, w = rng.integers(180, 400, 2)
        coarse = rng.integers(0, 256, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((w, h), Image.BICUBIC)
        path = f"AgeDB/{k}_Face_{k % 90}_f.jpg"
        image.save(root / path, quality=90)
        rows.append((k % 90, path, "train"))
    csv = root / "split.csv"
    pd.DataFrame(rows, columns=["age", "path", "split"]).to_csv(csv, index=False)
    return csv


def images_per_second(open_data, batch: int, repeat: int) -> float:
    """Best of ``repeat`` passes: open the split, then every image decoded + train-transformed."""
    best = float("inf")
    for r in range(repeat):
        start = time.perf_counter()
        data = open_data()
        generator = torch.Generator().manual_seed(r)
        for lo in range(0, len(data), batch):
            data.batch(range(lo, min(lo + batch, len(data))), True, generator)
        best = min(best, time.perf_counter() - start)
    return len(data) / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--workers", type=int, default=1, help="decoding threads per batch (default 1)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        csv = write_images(root / "images", args.n, args.seed)
        mb = sum(p.stat().st_size for p in (root / "images" / "AgeDB").iterdir()) / 1e6
        start = time.perf_counter()
        open_age_split(csv, root / "images", "train")
        check_ms = (time.perf_counter() - start) / args.n * 1e3
        pack_age_shards(csv, root / "images", root / "packed", workers=args.workers)
        loose = images_per_second(lambda: open_age_split(csv, root / "images", "train", workers=args.workers,
                                                         check=False), args.batch, args.repeat)
        shards = images_per_second(lambda: open_age_shards(root / "packed", "train", workers=args.workers),
                                   args.batch, args.repeat)
    print(f"{args.n} JPEGs ({mb / args.n * 1e3:.0f} kB each), train transform to 224, workers {args.workers}")
    print(f"  up-front check (open + verify + decode): {check_ms:.3f} ms/image")
    print(f"  loose files: {loose:8.1f} images/s")
    print(f"  shards:      {shards:8.1f} images/s   ratio shards/loose {shards / loose:.2f}")
    print(f"  GPU rate (paper Table 3, RTX 3090: {GPU_EPOCHS} x {GPU_TRAIN_IMAGES:,} images in {GPU_MINUTES:.0f} min): "
          f"{GPU_RATE:.1f} images/s")
    print(f"  loader / GPU with {args.workers} decoding thread(s): loose {loose / GPU_RATE:.2f}, "
          f"shards {shards / GPU_RATE:.2f}"
          f"{'' if min(loose, shards) >= GPU_RATE else '  (the loader is the bottleneck: raise --workers)'}")


if __name__ == "__main__":
    main()
