"""Image sources (loose files under a root, or JPEG bytes from Parquet shards), decoding and the up-front check.

The check (when a dataset is opened): the file exists, Pillow identifies it, ``Image.verify()`` passes and
a JPEG ends with its end-of-image marker (``verify`` does not read JPEG scan data, so truncation shows only
there). A file failing it is skipped with its reason. A file that still fails to decode later (changed
after the check) gives a grey placeholder image and is recorded, so an epoch never crashes.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, UnidentifiedImageError

JPEG_EOI = b"\xff\xd9"
_TAIL = 1024  # bytes searched for the JPEG end-of-image marker (some files carry trailing bytes)


class LooseImages:
    """Files ``root / path`` (paths already checked to stay inside ``root``)."""

    kind = "files"

    def __init__(self, files: Sequence[Path]):
        self.files = list(files)

    def raw(self, k: int) -> Path:
        return self.files[k]

    def subset(self, keep) -> LooseImages:
        return LooseImages([self.files[k] for k in keep])

    def tail(self, k: int) -> bytes:
        with open(self.files[k], "rb") as handle:
            handle.seek(0, io.SEEK_END)
            handle.seek(max(handle.tell() - _TAIL, 0))
            return handle.read()


class ShardImages:
    """Encoded images held in memory (a pyarrow binary column of the split's shards)."""

    kind = "shards"

    def __init__(self, blobs):
        self.blobs = blobs

    def raw(self, k: int) -> io.BytesIO:
        return io.BytesIO(self.blobs[k].as_py())

    def subset(self, keep) -> ShardImages:
        return ShardImages(self.blobs.take(keep))

    def tail(self, k: int) -> bytes:
        return self.blobs[k].as_py()[-_TAIL:]


def decode(source) -> Image.Image:
    """An RGB PIL image (the released code's ``Image.open(path).convert('RGB')``)."""
    with Image.open(source) as image:
        return image.convert("RGB")


def check_image(images, k: int) -> str | None:
    """None when image ``k`` looks readable, else the reason: missing, not an image, truncated, corrupt."""
    try:
        with Image.open(images.raw(k)) as image:
            fmt = image.format
            image.verify()
        if fmt == "JPEG" and JPEG_EOI not in images.tail(k):
            return "truncated"
    except FileNotFoundError:
        return "missing"
    except UnidentifiedImageError:
        return "not an image"
    except (OSError, SyntaxError, ValueError) as exc:
        return "truncated" if "truncated" in str(exc).lower() else "corrupt"
    return None
