"""The age dataset reader: transforms against torchvision's documented semantics, bad files, untrusted
paths, deterministic batches and Parquet shards that decode to the same tensors as loose files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image, ImageOps

from ecgka.age.dataset import open_age_split
from ecgka.age.shards import open_age_shards, pack_age_shards
from ecgka.age.transforms import AgeTransform
from ecgka.catalog.age import AgeImageDir
from ecgka.cli import main
from ecgka.errors import InputError


def _sample_image(seed: int = 0, shape=(47, 61)) -> Image.Image:
    rng = np.random.default_rng(seed)
    gradient = np.linspace(0, 200, shape[1])[None, :, None] + np.zeros((shape[0], 1, 3))
    pixels = np.clip(gradient + rng.integers(0, 55, (*shape, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def _reference(image: Image.Image, train: bool, size=224, padding=16, generator=None) -> torch.Tensor:
    """torchvision's Resize / RandomCrop(padding) / RandomHorizontalFlip / ToTensor / Normalize on PIL."""
    image = image.convert("RGB").resize((size, size), Image.BILINEAR)
    if train:
        image = ImageOps.expand(image, border=padding, fill=0)
        h, w = image.height, image.width
        i = torch.randint(0, h - size + 1, size=(1,), generator=generator).item()
        j = torch.randint(0, w - size + 1, size=(1,), generator=generator).item()
        image = image.crop((j, i, j + size, i + size))
        if torch.rand(1, generator=generator) < 0.5:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
    x = torch.tensor(np.array(image), dtype=torch.float32).permute(2, 0, 1) / 255.0
    return (x - 0.5) / 0.5


@pytest.mark.parametrize("seed", [0, 1, 2, 5])
def test_train_transform_matches_torchvision_semantics(seed):
    image, transform = _sample_image(seed), AgeTransform()
    torch.manual_seed(seed)
    ours = transform(image, transform.draw())
    torch.manual_seed(seed)
    assert torch.equal(ours, _reference(image, train=True))


def test_eval_transform_and_small_size():
    image = _sample_image(3).convert("L")  # grey input: decoded to RGB like the released code
    assert torch.equal(AgeTransform()(image.convert("RGB")), _reference(image, train=False))
    small = AgeTransform(size=32, padding=4)
    torch.manual_seed(9)
    ours = small(image.convert("RGB"), small.draw())
    torch.manual_seed(9)
    assert torch.equal(ours, _reference(image, train=True, size=32, padding=4))


def _write_split(root: Path, rows: list[tuple[int, str, str]]) -> Path:
    csv = root / "split.csv"
    pd.DataFrame(rows, columns=["age", "path", "split"]).to_csv(csv, index=False)
    return csv


@pytest.fixture()
def image_root(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    (root / "AgeDB").mkdir(parents=True)
    for k in range(4):
        _sample_image(k).save(root / "AgeDB" / f"{k}_X_{20 + k}_f.jpg", quality=90)
    _sample_image(7).save(root / "AgeDB" / "7_Y_50_m.png")
    good = (root / "AgeDB" / "0_X_20_f.jpg").read_bytes()
    (root / "AgeDB" / "trunc_Z_30_m.jpg").write_bytes(good[: len(good) // 2])
    (root / "AgeDB" / "text_Z_30_m.jpg").write_text("not an image")
    return root


def _rows():
    return [(20, "AgeDB/0_X_20_f.jpg", "train"), (21, "AgeDB/1_X_21_f.jpg", "train"),
            (30, "AgeDB/trunc_Z_30_m.jpg", "train"), (30, "AgeDB/text_Z_30_m.jpg", "train"),
            (31, "AgeDB/gone_Z_31_m.jpg", "train"), (50, "AgeDB/7_Y_50_m.png", "train"),
            (22, "AgeDB/2_X_22_f.jpg", "val"), (23, "AgeDB/3_X_23_f.jpg", "test")]


def test_bad_files_skipped_with_reasons(image_root, tmp_path):
    csv = _write_split(tmp_path, _rows())
    data = open_age_split(csv, image_root, "train", transform=AgeTransform(32, 4))
    assert len(data) == 3 and data.labels.tolist() == [20.0, 21.0, 50.0]
    assert data.sample_ids.tolist() == [0, 1, 5] and data.subject_ids.tolist() == [0, 1, 5]
    reasons = dict(zip(data.skipped["path"], data.skipped["reason"], strict=True))
    assert reasons == {"AgeDB/trunc_Z_30_m.jpg": "truncated", "AgeDB/text_Z_30_m.jpg": "not an image",
                       "AgeDB/gone_Z_31_m.jpg": "missing"}
    x, y = data.batch([0, 1, 2], train=True, generator=torch.Generator().manual_seed(0))
    assert x.shape == (3, 3, 32, 32) and x.dtype == torch.float32 and y.tolist() == [20.0, 21.0, 50.0]


def test_split_without_readable_image_is_clear(image_root, tmp_path):
    csv = _write_split(tmp_path, [(30, "AgeDB/text_Z_30_m.jpg", "val"), (31, "AgeDB/gone.jpg", "val"),
                                  (20, "AgeDB/0_X_20_f.jpg", "train")])
    with pytest.raises(InputError, match=r"split 'val' has no readable image \(2 rows"):
        open_age_split(csv, image_root, "val")


def test_file_broken_after_check_gives_placeholder(image_root, tmp_path):
    csv = _write_split(tmp_path, _rows())
    data = open_age_split(csv, image_root, "train", transform=AgeTransform(32, 4))
    (image_root / "AgeDB" / "1_X_21_f.jpg").write_text("gone bad")
    x, y = data.batch([0, 1, 2], train=False)
    assert torch.equal(x[1], torch.zeros(3, 32, 32)) and y.shape == (3,)
    assert [f["sample_id"] for f in data.load_failures] == [1]


@pytest.mark.parametrize("path", ["../outside.jpg", "{absolute}", "AgeDB/../../outside.jpg", "link.jpg"])
def test_paths_escaping_the_root_are_rejected(image_root, tmp_path, path):
    _sample_image().save(tmp_path / "outside.jpg")
    os.symlink(tmp_path / "outside.jpg", image_root / "link.jpg")
    path = path.format(absolute=tmp_path / "outside.jpg")  # an absolute path to a real image
    csv = _write_split(tmp_path, [(20, path, "train")])
    with pytest.raises(InputError, match="image root"):
        open_age_split(csv, image_root, "train")


def test_batches_deterministic_and_match_reference(image_root, tmp_path):
    csv = _write_split(tmp_path, _rows())
    data = open_age_split(csv, image_root, "train", transform=AgeTransform(64, 8), workers=3)
    x1, _ = data.batch([2, 0, 1], train=True, generator=torch.Generator().manual_seed(4))
    x2, _ = data.batch([2, 0, 1], train=True, generator=torch.Generator().manual_seed(4))
    x3, _ = data.batch([2, 0, 1], train=True, generator=torch.Generator().manual_seed(5))
    assert torch.equal(x1, x2) and not torch.equal(x1, x3)
    gen = torch.Generator().manual_seed(4)
    files = [image_root / p for p in ("AgeDB/7_Y_50_m.png", "AgeDB/0_X_20_f.jpg", "AgeDB/1_X_21_f.jpg")]
    expected = [_reference(Image.open(f), True, 64, 8, generator=gen) for f in files]
    assert torch.equal(x1, torch.stack(expected))


def test_shards_decode_like_loose_files(image_root, tmp_path):
    csv = _write_split(tmp_path, _rows())
    out = tmp_path / "packed"
    assert main(["age", "pack", "--csv", str(csv), "--images", str(image_root), "--out", str(out),
                 "--rows-per-shard", "2"]) == 0
    folder = AgeImageDir(out)
    assert folder.read_manifest()["counts"] == {"train": 3, "val": 1, "test": 1}
    assert [p.name for p in folder.shards("train")] == ["part-00000.parquet", "part-00001.parquet"]
    assert len(pd.read_csv(folder.skipped_path)) == 3
    for split in ("train", "val", "test"):
        loose = open_age_split(csv, image_root, split, transform=AgeTransform(48, 6))
        packed = open_age_shards(out, split, transform=AgeTransform(48, 6))
        assert packed.sample_ids.tolist() == loose.sample_ids.tolist()
        assert np.array_equal(packed.labels, loose.labels)
        rows = list(range(len(loose)))
        for train in (False, True):
            a = loose.batch(rows, train, torch.Generator().manual_seed(1))[0]
            assert torch.equal(a, packed.batch(rows, train, torch.Generator().manual_seed(1))[0])
    assert main(["age", "pack", "--csv", str(csv), "--images", str(image_root), "--out", str(out)]) == 2


def test_bad_files_lists_both_kinds(image_root, tmp_path):
    csv = _write_split(tmp_path, _rows())
    data = open_age_split(csv, image_root, "train", transform=AgeTransform(32, 4), workers=2)
    data.batch([0], train=False)  # starts the thread pool
    (image_root / "AgeDB" / "7_Y_50_m.png").write_bytes(b"\x89PNG broken")
    data.batch([2], train=False)
    bad = data.bad_files()
    assert list(bad.columns) == ["sample_id", "path", "reason"] and len(bad) == 4
    assert bad["sample_id"].iat[-1] == 5 and bad["reason"].iat[-1].startswith("decode failed")


def test_empty_split_and_missing_root(image_root, tmp_path):
    csv = _write_split(tmp_path, [(20, "AgeDB/0_X_20_f.jpg", "train")])
    with pytest.raises(InputError, match="split 'test' has no rows"):
        open_age_split(csv, image_root, "test")
    with pytest.raises(InputError, match="image root is not a folder"):
        open_age_split(csv, tmp_path / "nowhere", "train")


def test_failed_pack_leaves_nothing(image_root, tmp_path):
    csv = _write_split(tmp_path, [(20, "AgeDB/0_X_20_f.jpg", "train"), (30, "AgeDB/text_Z_30_m.jpg", "test")])
    out = tmp_path / "packed"
    with pytest.raises(InputError, match="split 'test' has no readable image"):
        pack_age_shards(csv, image_root, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "split.csv"]  # no temporary left
    assert main(["age", "pack", "--csv", str(csv), "--images", str(image_root), "--out", str(out)]) == 2
