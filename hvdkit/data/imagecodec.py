"""One image file's bytes to a uint8 (size, size, 3) array: decoded, cropped, resized, flipped.

The crop is chosen from the image's header before anything is decoded, so a JPEG is decoded
at the smallest DCT scale (1/2, 3/8, 1/4, 1/8) that still leaves the crop at least `size`
pixels on each side: libjpeg-turbo then does a fraction of the work. JPEGs go through
simplejpeg (libjpeg-turbo; 0.63 ms for a 500x375 JPEG here, against Pillow's 0.90 ms through
the same library), and anything else (PNG, a JPEG simplejpeg refuses: CMYK, unusual markers)
through Pillow, whose `draft` does the same reduced decoding for JPEGs. The crop and the
resize are one Pillow call (`resize(box=...)`, bilinear, antialiased as torchvision's on PIL
images).

The transforms are torchvision's, on PIL images:
  train, imagenet  RandomResizedCrop(size, scale=(0.08, 1), ratio=(3/4, 4/3)) and
                   RandomHorizontalFlip, drawn from the generator handed in
  test,  imagenet  Resize(round(size * 256 / 224)) and CenterCrop(size): deterministic
  none             the whole image resized to size x size
"""

from __future__ import annotations

import io
import math

import numpy as np

try:  # a maintained libjpeg-turbo wheel; Pillow decodes everything without it
    import simplejpeg
except ImportError:  # pragma: no cover - set-up installs it
    simplejpeg = None

SCALE = (0.08, 1.0)
RATIO = (3 / 4, 4 / 3)
RESIZE_FOR_CROP = 256 / 224  # the test transform resizes to 256 for a 224 crop
JPEG_MAGIC = b"\xff\xd8"

Box = tuple[float, float, float, float]  # left, top, right, bottom, in the image's pixels


def random_resized_crop(width: int, height: int, rng: np.random.Generator) -> Box:
    """torchvision's RandomResizedCrop.get_params: 10 tries at a random area and aspect
    ratio, then the whole image clamped to the ratio range, centered."""
    area = width * height
    log_ratio = (math.log(RATIO[0]), math.log(RATIO[1]))
    for _ in range(10):
        target = area * rng.uniform(*SCALE)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return left, top, left + w, top + h
    ratio = width / height
    if ratio < RATIO[0]:
        w, h = width, round(width / RATIO[0])
    elif ratio > RATIO[1]:
        w, h = round(height * RATIO[1]), height
    else:
        w, h = width, height
    top, left = (height - h) // 2, (width - w) // 2
    return left, top, left + w, top + h


def center_crop(width: int, height: int, size: int) -> Box:
    """torchvision's Resize(round(size * 256/224)) then CenterCrop(size), as the box of the
    original image that becomes the crop."""
    short = round(size * RESIZE_FOR_CROP)
    if width <= height:
        new_w, new_h = short, int(short * height / width)
    else:
        new_w, new_h = int(short * width / height), short
    top = round((new_h - size) / 2.0)
    left = round((new_w - size) / 2.0)
    sx, sy = width / new_w, height / new_h
    return left * sx, top * sy, (left + size) * sx, (top + size) * sy


def crop_box(width: int, height: int, size: int, train: bool, augment: str,
             rng: np.random.Generator | None) -> tuple[Box, bool]:
    """The box of the image to resize to size x size, and whether to flip it."""
    if augment == "none":
        return (0, 0, width, height), False
    if not train:
        return center_crop(width, height, size), False
    assert rng is not None
    box = random_resized_crop(width, height, rng)
    return box, bool(rng.random() < 0.5)


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the header alone."""
    if simplejpeg is not None and data[:2] == JPEG_MAGIC:
        try:
            height, width, _, _ = simplejpeg.decode_jpeg_header(data)
            return width, height
        except ValueError:
            pass
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.size
    except UnidentifiedImageError:
        raise ValueError("not a JPEG or PNG image" if data else "an empty file") from None


def _decode(data: bytes, need_w: int, need_h: int) -> object:
    """A PIL RGB image of at least need_w x need_h pixels where the format can decode at a
    reduced size (JPEG), else the whole image."""
    from PIL import Image

    if simplejpeg is not None and data[:2] == JPEG_MAGIC:
        try:
            array = simplejpeg.decode_jpeg(data, "RGB", min_width=need_w, min_height=need_h,
                                           min_factor=2)
            return Image.fromarray(array)
        except ValueError:
            pass  # CMYK, a damaged stream: Pillow decides
    im = Image.open(io.BytesIO(data))
    if im.format == "JPEG":
        im.draft("RGB", (need_w, need_h))
    return im.convert("RGB")


def transform(data: bytes, size: int, train: bool, augment: str,
              rng: np.random.Generator | None) -> np.ndarray:
    """The image in `data` as a (size, size, 3) uint8 array (see the module doc); raises on a
    file that is not a readable image (OSError, ValueError, SyntaxError and the like)."""
    from PIL import Image

    width, height = image_size(data)
    if width < 1 or height < 1:
        raise ValueError(f"image of {width}x{height} pixels")
    box, flip = crop_box(width, height, size, train, augment, rng)
    box_w, box_h = box[2] - box[0], box[3] - box[1]
    need_w = min(width, math.ceil(width * size / box_w))
    need_h = min(height, math.ceil(height * size / box_h))
    im = _decode(data, need_w, need_h)
    sx, sy = im.size[0] / width, im.size[1] / height
    scaled = (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)
    out = np.asarray(im.resize((size, size), Image.BILINEAR, box=scaled))
    return np.ascontiguousarray(out[:, ::-1]) if flip else out
