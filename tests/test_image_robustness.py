"""Issue 21: the image check decides by decoding (trailing bytes are fine, truncation is not), images over
Pillow's pixel limit are bad files (not a crash), 16-bit greyscale and CMYK convert correctly."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image, ImageCms

from ecgka.age.dataset import open_age_split
from ecgka.age.images import ImageTooLarge, check_image, decode
from ecgka.age.transforms import AgeTransform


def _jpeg(seed=0, shape=(48, 64)) -> bytes:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (shape[0] // 8, shape[1] // 8, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(coarse).resize((shape[1], shape[0]), Image.BICUBIC).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _bomb_png(side=30000) -> bytes:
    """A PNG whose IHDR declares side x side RGB pixels (valid CRCs), with a tiny IDAT."""
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(b"\0" * 16))
            + _chunk(b"IEND", b""))


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    (root / "AgeDB").mkdir(parents=True)
    good = _jpeg(0)
    garbage = np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    (root / "AgeDB" / "good.jpg").write_bytes(good)
    (root / "AgeDB" / "trailing.jpg").write_bytes(good + garbage)  # 4 KiB after the end marker
    (root / "AgeDB" / "trunc.jpg").write_bytes(good[: len(good) * 2 // 3])
    (root / "AgeDB" / "bomb.png").write_bytes(_bomb_png())
    rows = [(20, "AgeDB/good.jpg", "train"), (21, "AgeDB/trailing.jpg", "train"),
            (22, "AgeDB/trunc.jpg", "train"), (23, "AgeDB/bomb.png", "train")]
    pd.DataFrame(rows, columns=["age", "path", "split"]).to_csv(tmp_path / "split.csv", index=False)
    return root


def test_check_decides_by_decoding(folder: Path, tmp_path: Path):
    data = open_age_split(tmp_path / "split.csv", folder, "train", transform=AgeTransform(32, 4))
    reasons = dict(zip(data.skipped["path"], data.skipped["reason"], strict=True))
    # trailing bytes were "truncated" (end marker searched in the last 1 KiB); the bomb raised out of the check
    assert reasons == {"AgeDB/trunc.jpg": "truncated", "AgeDB/bomb.png": "too large"}
    assert data.labels.tolist() == [20.0, 21.0]
    x, _ = data.batch([0, 1], train=False)
    assert torch.equal(x[0], x[1])  # the trailing bytes change nothing
    assert np.array_equal(np.asarray(decode(folder / "AgeDB" / "trailing.jpg")),
                          np.asarray(decode(folder / "AgeDB" / "good.jpg")))


def test_bomb_at_decode_time_is_a_recorded_bad_file(folder: Path, tmp_path: Path):
    with pytest.raises(ImageTooLarge):
        decode(folder / "AgeDB" / "bomb.png")
    data = open_age_split(tmp_path / "split.csv", folder, "train", transform=AgeTransform(32, 4))
    (folder / "AgeDB" / "good.jpg").write_bytes(_bomb_png())  # replaced after the check
    x, _ = data.batch([0], train=False)  # a grey placeholder, not a crash
    assert torch.equal(x[0], torch.zeros(3, 32, 32))
    assert data.bad_files()["reason"].iat[-1].startswith("decode failed")


class _Blobs:
    """A ShardImages-like source over in-memory bytes."""

    def __init__(self, blobs):
        self.blobs = blobs

    def raw(self, k):
        return io.BytesIO(self.blobs[k])


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # 144 M pixels: Pillow warns only
def test_check_on_bytes():
    good = _jpeg(3, (200, 160))
    blobs = _Blobs([good, good + b"\0" * 5000, good[:-400], _bomb_png(12000), b"GIF89a broken"])
    assert [check_image(blobs, k) for k in range(5)] == [None, None, "truncated", "too large", "not an image"]


def test_sixteen_bit_png_scales_to_eight_bits(tmp_path: Path):
    levels = np.arange(256, dtype=np.uint16).reshape(16, 16)
    path = tmp_path / "grey16.png"
    Image.fromarray(levels * 257).save(path)  # 0, 257, ..., 65535
    with Image.open(path) as image:
        assert image.mode.startswith("I")  # Pillow opens it as 16-bit
    rgb = np.asarray(decode(path))
    assert rgb.shape == (16, 16, 3) and rgb.dtype == np.uint8
    for channel in range(3):
        np.testing.assert_array_equal(rgb[..., channel], levels)  # was 99.6 % white
    mid = tmp_path / "mid.png"
    Image.fromarray(np.array([[128, 32896, 65406]], dtype=np.uint16)).save(mid)
    assert np.asarray(decode(mid))[0, :, 0].tolist() == [0, 128, 254]  # round(v / 257)


def _cmyk_of(rgb) -> tuple[int, ...]:
    r, g, b = (v / 255 for v in rgb)
    k = 1 - max(r, g, b)
    return tuple(round(255 * v) for v in ((1 - r - k) / (1 - k), (1 - g - k) / (1 - k), (1 - b - k) / (1 - k), k))


@pytest.mark.parametrize("rgb", [(200, 100, 50), (30, 160, 220), (90, 90, 90)])
def test_cmyk_jpeg_converts_to_its_colour(tmp_path: Path, rgb):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (32, 32), _cmyk_of(rgb)).save(path, quality=95)  # Pillow writes Adobe (inverted) CMYK
    assert b"Adobe" in path.read_bytes()
    out = np.asarray(decode(path)).reshape(-1, 3).astype(int)
    assert np.abs(out - np.array(rgb)).max() <= 3, out[0]  # naive 255 - (c + k) is off by up to 100
    # a profile that is not a CMYK one is ignored (the plain conversion), never an error
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    for icc in (srgb, b"not a profile"):
        tagged = tmp_path / "tagged.jpg"
        Image.new("CMYK", (32, 32), _cmyk_of(rgb)).save(tagged, quality=95, icc_profile=icc)
        assert np.abs(np.asarray(decode(tagged)).reshape(-1, 3).astype(int) - np.array(rgb)).max() <= 3
