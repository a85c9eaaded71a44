"""Optional packing of a DIR split CSV's images into Parquet shards, and reading them back.

Each image's file bytes are stored unchanged (``image`` column, uncompressed: JPEG bytes do not compress),
so a packed split decodes to exactly the tensors of the loose files. Files that fail the check are left out
and listed in ``skipped.csv``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ecgka import __version__
from ecgka.age.dataset import SKIPPED_COLUMNS, AgeDataset, open_age_split
from ecgka.age.images import ShardImages
from ecgka.age.table import read_split_table
from ecgka.age.transforms import AgeTransform
from ecgka.catalog import FolderKind, claim_folder
from ecgka.catalog.age import AGE_IMAGES_KIND, AGE_IMAGES_VERSION, AgeImageDir
from ecgka.config import config_hash
from ecgka.io import atomic_path, atomic_write_json, file_fingerprint
from ecgka.keys import SPLITS
from ecgka.labels import LabelGrid

SCHEMA = pa.schema([("sample_id", pa.int64()), ("age", pa.float32()), ("path", pa.string()),
                    ("image", pa.binary())])
COMPRESSION = {"sample_id": "zstd", "age": "zstd", "path": "zstd", "image": "none"}


def pack_age_shards(csv: str | Path, image_root: str | Path, out: str | Path, *, rows_per_shard: int = 1024,
                    workers: int = 1, force: bool = False) -> dict:
    """Pack every split of ``csv`` into ``out`` (missing, empty or an ``age-images`` folder: one of another
    CSV is replaced only with ``force``); returns the manifest. A split whose rows are all unreadable is an
    InputError (as when reading it loose)."""
    folder = AgeImageDir(out)
    claim = claim_folder(folder.path, FolderKind.AGE_IMAGES)
    source = file_fingerprint(csv)
    content = config_hash({"csv": source["sha256"], "image_root": str(Path(image_root).resolve()),
                           "rows_per_shard": int(rows_per_shard)})
    claim.check_replace(content, force=force, what=f"age images {claim.content}")
    present = set(read_split_table(csv)["split"])
    counts, skipped = dict.fromkeys(SPLITS, 0), []
    with atomic_path(folder.path) as tmp:  # the folder appears whole, or not at all
        work = AgeImageDir(tmp)
        tmp.mkdir(parents=True)
        for split in (s for s in SPLITS if s in present):  # a split without rows gets no folder
            data = open_age_split(csv, image_root, split, workers=workers)
            counts[split] = _write_split(work, split, data, max(int(rows_per_shard), 1))
            skipped.append(data.skipped.assign(split=split))
        empty = pd.DataFrame(columns=["split", *SKIPPED_COLUMNS])
        table = pd.concat(skipped, ignore_index=True)[list(empty.columns)] if skipped else empty
        table.to_csv(work.skipped_path, index=False)
        manifest = {"kind": AGE_IMAGES_KIND, "version": AGE_IMAGES_VERSION, "ecgka_version": __version__,
                    "source": {"csv": str(csv), **source}, "counts": counts,
                    "skipped": int(len(table)), "label": LabelGrid.preset("age").to_dict()}
        atomic_write_json(work.manifest_path, manifest)
        claim.write_marker(content, root=tmp)
    return manifest


def _write_split(folder: AgeImageDir, split: str, data: AgeDataset, rows_per_shard: int) -> int:
    rows = data.rows
    folder.split_dir(split).mkdir(parents=True, exist_ok=True)
    for index, start in enumerate(range(0, len(rows), rows_per_shard)):
        part = rows.iloc[start:start + rows_per_shard]
        blobs = [Path(data.images.raw(k)).read_bytes() for k in range(start, start + len(part))]
        table = pa.table({"sample_id": part["sample_id"].to_numpy(), "age": part["age"].to_numpy(),
                          "path": part["path"].tolist(), "image": blobs}, schema=SCHEMA)
        pq.write_table(table, folder.split_dir(split) / folder.shard_name(index), compression=COMPRESSION)
    return int(len(rows))


def open_age_shards(path: str | Path, split: str, *, transform: AgeTransform | None = None,
                    workers: int = 1) -> AgeDataset:
    """Split ``split`` of a packed folder, its encoded images held in memory."""
    folder = AgeImageDir(path)
    folder.read_manifest()
    table = pa.concat_tables([pq.read_table(p, schema=SCHEMA) for p in folder.shards(split)])
    rows = table.select(["sample_id", "age", "path"]).to_pandas()
    skipped = pd.read_csv(folder.skipped_path, dtype={"path": str})
    skipped = skipped[skipped["split"] == split][list(SKIPPED_COLUMNS)].reset_index(drop=True)
    images = ShardImages(table.column("image").combine_chunks())
    return AgeDataset(rows.assign(split=split), images, split=split, transform=transform, skipped=skipped,
                      workers=workers)
