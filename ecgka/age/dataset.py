"""The age dataset adapter: one split of a DIR split CSV (or of packed shards), batches for the trainer.

``AgeDataset`` offers what the trainer needs: ``len``, ``labels`` (float32), ``sample_ids``, ``subject_ids``
(= sample ids: one face per sample), ``skipped`` (files left out, with reasons) and
``batch(indices, train, generator) -> (x float32 [B, 3, s, s], y float32 [B])``, whose augmentation is
fixed by the generator (draws in index order: crop row, crop column, flip per image).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ecgka.age.images import LooseImages, check_image, decode
from ecgka.age.paths import safe_join
from ecgka.age.table import read_split_table
from ecgka.age.transforms import AgeTransform
from ecgka.errors import InputError

SKIPPED_COLUMNS = ("sample_id", "path", "reason")


class AgeDataset:
    """Rows of one split with readable images; ``workers`` > 1 decodes a batch in threads."""

    def __init__(self, rows: pd.DataFrame, images, *, split: str, transform: AgeTransform | None = None,
                 skipped: pd.DataFrame | None = None, workers: int = 1):
        self.rows = rows.reset_index(drop=True)
        self.images, self.split = images, split
        self.transform = transform or AgeTransform()
        self.skipped = skipped if skipped is not None else pd.DataFrame(columns=SKIPPED_COLUMNS)
        self.load_failures: list[dict] = []
        self.workers = max(int(workers), 1)
        self._labels = self.rows["age"].to_numpy(np.float32)
        self._pool: ThreadPoolExecutor | None = None

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def labels(self) -> np.ndarray:
        return self._labels

    @property
    def sample_ids(self) -> np.ndarray:
        return self.rows["sample_id"].to_numpy(np.int64)

    @property
    def subject_ids(self) -> np.ndarray:
        return self.sample_ids

    def image(self, k: int, draw=None) -> torch.Tensor:
        """Row ``k`` decoded and transformed; a decode failure gives a grey placeholder (recorded)."""
        try:
            image = decode(self.images.raw(int(k)))
        except (OSError, SyntaxError, ValueError) as exc:
            self.load_failures.append({"sample_id": int(self.rows["sample_id"].iat[int(k)]),
                                       "path": self.rows["path"].iat[int(k)], "reason": f"decode failed: {exc}"})
            size = self.transform.size
            return torch.zeros(3, size, size)
        return self.transform(image, draw)

    def batch(self, indices, train: bool, generator: torch.Generator | None = None):
        """``(x [B, 3, s, s], y [B])`` for rows ``indices``; train draws the augmentation from ``generator``."""
        indices = [int(k) for k in indices]
        draws = [self.transform.draw(generator) if train else None for _ in indices]
        if self.workers > 1 and self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers)
        mapper = self._pool.map if self._pool is not None else map
        x = torch.stack(list(mapper(self.image, indices, draws)))
        return x, torch.from_numpy(self._labels[indices])

    def bad_files(self) -> pd.DataFrame:
        """Files left out when opened plus files that failed to decode since: sample_id, path, reason."""
        failures = pd.DataFrame(self.load_failures, columns=list(SKIPPED_COLUMNS))
        return pd.concat([self.skipped, failures], ignore_index=True) if len(failures) else self.skipped.copy()


def open_age_split(csv: str | Path, image_root: str | Path, split: str, *, transform: AgeTransform | None = None,
                   workers: int = 1, check: bool = True) -> AgeDataset:
    """Split ``split`` of a DIR CSV whose paths are under ``image_root``; every image checked up front
    (``check=False``: trust the files, e.g. to read labels without the images)."""
    table = read_split_table(csv)
    rows = table[table["split"] == split].reset_index(drop=True)
    root = Path(image_root)
    if not root.is_dir():
        raise InputError(f"{root}: image root is not a folder")
    if rows.empty:
        raise InputError(f"{csv}: split {split!r} has no rows")
    images = LooseImages([safe_join(root, p, where=f"{csv}: column path") for p in rows["path"]])
    reasons = _check_all(images, len(rows), workers) if check else [None] * len(rows)
    bad = np.array([r is not None for r in reasons], dtype=bool)
    skipped = rows.loc[bad, ["sample_id", "path"]].assign(reason=[r for r in reasons if r is not None])
    if bad.all():
        raise InputError(f"{csv}: split {split!r} has no readable image ({len(rows)} rows; e.g. "
                         f"{skipped['path'].iat[0]}: {skipped['reason'].iat[0]})")
    keep = np.flatnonzero(~bad)
    return AgeDataset(rows.iloc[keep], images.subset(keep), split=split, transform=transform,
                      skipped=skipped.reset_index(drop=True), workers=workers)


def _check_all(images, n: int, workers: int) -> list[str | None]:
    """The check's reason (None: readable) for each image, in threads when ``workers`` > 1."""
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(lambda k: check_image(images, k), range(n)))
    return [check_image(images, k) for k in range(n)]
