"""Region crops for scoring: one function turns a regions-table row into the image to score.

Modes:
- ``bbox``: the region's tight bounding box cut from the original pixels (the paper's choice);
- ``mask``: the same box with every pixel outside the mask set to 0 (the masked ablation);
- ``whole``: the whole image, whatever the region.
A ``global`` region is the whole image in every mode. Regions whose crops are identical (a
region whose bounding box is the whole image, in ``bbox`` mode, is the whole image again) are cut,
and scored, once per image (:func:`region_crops`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, ImageOps

from dogiqa import rle
from dogiqa.errors import DogIQAError, ImageError

CROP_MODES = ("bbox", "mask", "whole")


def parse_rle(value: Any) -> list[int] | None:
    """RLE counts from a table cell: a JSON string, a list, or empty (None / "" / NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str):
        return json.loads(value) if value.strip() else None
    if isinstance(value, Sequence | np.ndarray):
        return [int(v) for v in value]
    raise DogIQAError(f"region rle: unsupported value of type {type(value).__name__}")


def region_mask(region: Mapping[str, Any]) -> np.ndarray:
    """The region's full-image bool mask (all True for ``global`` or an empty rle)."""
    height, width = int(region["height"]), int(region["width"])
    counts = parse_rle(region.get("rle"))
    if region["kind"] == "global" or counts is None:
        return np.ones((height, width), dtype=bool)
    return rle.decode(counts, height, width)


def _check_region(image: np.ndarray, region: Mapping[str, Any]) -> tuple[int, int, int, int]:
    height, width = image.shape[:2]
    if (int(region["height"]), int(region["width"])) != (height, width):
        raise DogIQAError(
            f"region of image {region.get('image', '?')!s}: recorded size "
            f"{region['height']}x{region['width']} differs from the image's {height}x{width}"
        )
    x0, y0, x1, y1 = (int(region[k]) for k in ("x0", "y0", "x1", "y1"))
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise DogIQAError(
            f"region of image {region.get('image', '?')!s}: bbox ({x0},{y0},{x1},{y1}) is empty "
            f"or outside the {width}x{height} image"
        )
    return x0, y0, x1, y1


def make_crop(image: np.ndarray, region: Mapping[str, Any], mode: str) -> Image.Image:
    """The image to score for ``region`` of ``image`` (H x W x 3 uint8) in crop ``mode``."""
    if mode not in CROP_MODES:
        raise DogIQAError(f"crop mode must be one of {list(CROP_MODES)}, got {mode!r}")
    if region["kind"] == "global" or mode == "whole":
        return Image.fromarray(np.ascontiguousarray(image))
    x0, y0, x1, y1 = _check_region(image, region)
    crop = image[y0:y1, x0:x1]
    if mode == "mask":
        inside = region_mask(region)[y0:y1, x0:x1]
        crop = np.where(inside[:, :, None], crop, 0).astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(crop))


def image_groups(regions: pd.DataFrame) -> Iterator[tuple[str, pd.DataFrame]]:
    """(image, its regions in region order), images in table order."""
    for name, group in regions.groupby("image", sort=False):
        yield str(name), group.sort_values("region", kind="stable")


def crop_key(region: Mapping[str, Any], height: int, width: int, crop_mode: str) -> tuple:
    """Regions with equal keys have pixel-identical crops."""
    if region["kind"] == "global" or crop_mode == "whole":
        return (0, 0, width, height)
    box = tuple(int(region[k]) for k in ("x0", "y0", "x1", "y1"))
    return (*box, str(region["rle"])) if crop_mode == "mask" else box


def region_crops(
    image: np.ndarray, records: Sequence[Mapping[str, Any]], crop_mode: str
) -> tuple[list[Image.Image], list[int]]:
    """The distinct crops of an image's regions, and each region's index into them."""
    height, width = image.shape[:2]
    first: dict[tuple, int] = {}
    crops: list[Image.Image] = []
    index: list[int] = []
    for region in records:
        if (int(region["height"]), int(region["width"])) != (height, width):
            raise ImageError(
                f"region {region['region']} records size {region['height']}x{region['width']}"
                f" but the image is {height}x{width}"
            )
        key = crop_key(region, height, width, crop_mode)
        if key not in first:
            first[key] = len(crops)
            try:
                crops.append(make_crop(image, region, crop_mode))
            except DogIQAError as exc:  # the regions do not fit this image file
                raise ImageError(str(exc)) from None
        index.append(first[key])
    return crops, index


def distinct_crops(regions: pd.DataFrame, crop_mode: str) -> int:
    """Crops a scorer scores for ``regions`` (distinct crops per image, summed)."""
    total = 0
    for _, group in image_groups(regions):
        height, width = int(group["height"].iloc[0]), int(group["width"].iloc[0])
        records = group.to_dict("records")
        total += len({crop_key(r, height, width, crop_mode) for r in records})
    return total


def pad_to_aspect(image: Image.Image, max_ratio: float) -> Image.Image:
    """``image`` centred on black bars so that its long side is at most ``max_ratio`` times its
    short side (unchanged when it already is). Padding, unlike stretching, keeps every pixel of
    the region as it is; black is what ``mask`` crops put outside a region."""
    width, height = image.size
    if max(width, height) <= max_ratio * min(width, height):
        return image
    if width > height:
        extra = math.ceil(width / max_ratio) - height
        border = (0, extra // 2, 0, extra - extra // 2)
    else:
        extra = math.ceil(height / max_ratio) - width
        border = (extra // 2, 0, extra - extra // 2, 0)
    return ImageOps.expand(image, border=border, fill=0)
