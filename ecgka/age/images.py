"""Image sources (loose files under a root, or JPEG bytes from Parquet shards), decoding and the up-front check.

The check (when a dataset is opened): the file exists, Pillow identifies it, its size is within Pillow's
decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``), ``Image.verify()`` passes, and the image decodes to
its end (``load()`` with Pillow's ``LOAD_TRUNCATED_IMAGES`` off, its default: a truncated file raises;
bytes after a JPEG's end marker are ignored). JPEGs decode at 1/8 scale there (``draft``), which still
reads all scan data. A file failing it is skipped with its reason. A file that still fails to decode later
(changed after the check) gives a grey placeholder image and is recorded, so an epoch never crashes.

Decoding is the released ``Image.open(path).convert("RGB")`` except for modes that conversion gets wrong:
16-bit greyscale (``I;16*``, and ``I`` holding values above 255) is scaled to 8 bits (round(v / 257))
instead of clipped (a 16-bit PNG came out almost white), and CMYK uses the embedded ICC profile through
``PIL.ImageCms`` when there is one (the result of that conversion, else Pillow's multiplicative
``(255 - c)(255 - k) / 255``; Pillow's JPEG decoder already undoes the inverted CMYK of Adobe/Photoshop files,
APP14 marker).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

try:
    from PIL import ImageCms
except ImportError:  # Pillow built without littlecms: CMYK converts without its profile
    ImageCms = None

TOO_LARGE = "too large"


class ImageTooLarge(OSError):
    """An image whose header declares more pixels than Pillow's decompression-bomb limit."""


class LooseImages:
    """Files ``root / path`` (paths already checked to stay inside ``root``)."""

    kind = "files"

    def __init__(self, files: Sequence[Path]):
        self.files = list(files)

    def raw(self, k: int) -> Path:
        return self.files[k]

    def subset(self, keep) -> LooseImages:
        return LooseImages([self.files[k] for k in keep])


class ShardImages:
    """Encoded images held in memory (a pyarrow binary column of the split's shards)."""

    kind = "shards"

    def __init__(self, blobs):
        self.blobs = blobs

    def raw(self, k: int) -> io.BytesIO:
        return io.BytesIO(self.blobs[k].as_py())

    def subset(self, keep) -> ShardImages:
        return ShardImages(self.blobs.take(keep))


def _open(source) -> Image.Image:
    """``Image.open`` with images over the pixel limit refused before any pixel is decoded."""
    try:
        image = Image.open(source)
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(str(exc)) from None
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and image.width * image.height > limit:
        image.close()
        raise ImageTooLarge(f"{image.width} x {image.height} pixels exceed the limit of {limit}")
    return image


def _sixteen_bit_to_rgb(image: Image.Image) -> Image.Image:
    """16-bit greyscale to 8 bits per channel: round(v / 257), so v = 257 k gives k exactly."""
    values = np.clip(np.asarray(image).astype(np.int64), 0, 65535)
    if image.mode == "I" and values.max(initial=0) <= 255:
        eight = values  # an "I" image holding 8-bit values
    else:
        eight = (values + 128) // 257
    return Image.fromarray(eight.astype(np.uint8), mode="L").convert("RGB")


def _cmyk_to_rgb(image: Image.Image) -> Image.Image:
    """CMYK through the embedded ICC profile (to sRGB) when there is one and it applies, else Pillow's
    multiplicative conversion."""
    icc = image.info.get("icc_profile")
    if icc and ImageCms is not None:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            if source.profile.xcolor_space.strip() == "CMYK":
                return ImageCms.profileToProfile(image, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
        except (OSError, ValueError, TypeError, ImageCms.PyCMSError):
            pass  # not a usable CMYK profile: the plain conversion below
    return image.convert("RGB")


def to_rgb(image: Image.Image) -> Image.Image:
    """An 8-bit RGB copy of a decoded image (see the module docstring for the modes handled specially)."""
    if image.mode.startswith("I;16") or image.mode == "I":
        return _sixteen_bit_to_rgb(image)
    if image.mode == "CMYK":
        return _cmyk_to_rgb(image)
    return image.convert("RGB")


def decode(source) -> Image.Image:
    """An RGB PIL image (the released code's ``Image.open(path).convert('RGB')``, 16-bit and CMYK fixed);
    an image over the pixel limit raises ``ImageTooLarge`` (an ``OSError``)."""
    with _open(source) as image:
        image.load()
        return to_rgb(image)


def check_image(images, k: int) -> str | None:
    """None when image ``k`` decodes, else the reason: missing, not an image, too large, truncated, corrupt."""
    try:
        with _open(images.raw(k)) as image:
            if image.format == "JPEG":  # verify() checks nothing in a JPEG: decode at once
                image.draft(None, (1, 1))  # 1/8 scale: all scan data is still read
                image.load()
                return None
            image.verify()  # e.g. PNG chunk CRCs
        with _open(images.raw(k)) as image:  # verify() leaves the image unusable: reopen to decode
            image.load()
    except FileNotFoundError:
        return "missing"
    except UnidentifiedImageError:
        return "not an image"
    except ImageTooLarge:
        return TOO_LARGE
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        return "truncated" if "truncated" in str(exc).lower() else "corrupt"
    return None
