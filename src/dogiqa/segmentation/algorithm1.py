"""Algorithm 1 of Dog-IQA: from a segmenter's masks to the regions of one image.

Keep every mask with area >= t; add the complement (the pixels no kept mask covers) when it is
large enough; fall back to the whole image when no mask is kept. Two modes:

- ``correct``: the complement is ``NOT(union of kept masks)`` and its area is its true pixel
  count, which decides whether it is kept.
- ``authors``: the authors' code computes the remaining area as ``H*W - sum(kept areas)`` (a sum,
  so overlapping masks make it too small or negative), keeps the complement when that number is
  >= t, and records that number as its area. The complement's pixels are the same in both modes.

Each region row records the area as this mode computes it (``area``) and as the authors' code
computes it (``area_authors``), so either weighting can be used downstream.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dogiqa import rle, schema

MODES = ("correct", "authors")


@dataclass(frozen=True)
class Threshold:
    """The area threshold t: absolute pixels, or a fraction of the image when ``fraction`` > 0."""

    pixels: int = 1000
    fraction: float = 0.0

    def for_image(self, height: int, width: int) -> float:
        return self.fraction * height * width if self.fraction > 0 else float(self.pixels)


def _row(kind: str, mask: np.ndarray, area: int, area_authors: int) -> dict[str, Any]:
    x0, y0, x1, y1 = rle.mask_bbox(mask)
    counts = "" if kind == "global" else json.dumps(rle.encode(mask), separators=(",", ":"))
    return {
        "kind": kind,
        "x0": x0,
        "y0": y0,
        "x1": x1,
        "y1": y1,
        "area": int(area),
        "area_authors": int(area_authors),
        "rle": counts,
    }


def select_regions(
    masks: Sequence[np.ndarray], height: int, width: int, t: float, mode: str = "correct"
) -> list[tuple[str, np.ndarray, int, int]]:
    """Algorithm 1 proper: the final regions as ``(kind, mask, area, area_authors)``.

    Kept masks come first by decreasing area (ties keep the segmenter's order), then the
    complement when it is kept; a single ``whole`` region when no mask is kept.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    total = height * width
    areas = [int(np.count_nonzero(m)) for m in masks]
    kept = [i for i, a in enumerate(areas) if a >= t]
    if not kept:
        return [("whole", np.ones((height, width), dtype=bool), total, total)]
    kept.sort(key=lambda i: -areas[i])  # stable: ties keep the segmenter's order
    regions = [("mask", np.asarray(masks[i], dtype=bool), areas[i], areas[i]) for i in kept]
    union = np.logical_or.reduce([r[1] for r in regions])
    complement = ~union
    true_area = int(np.count_nonzero(complement))
    authors_area = total - sum(areas[i] for i in kept)
    area = true_area if mode == "correct" else authors_area
    if area >= t:
        regions.append(("complement", complement, area, authors_area))
    return regions


def region_rows(
    masks: Iterable[np.ndarray], height: int, width: int, t: float, mode: str = "correct"
) -> list[dict[str, Any]]:
    """The image's rows of the regions table (without ``image`` and ``backend``).

    Row 0 is the ``global`` whole image; then the regions of :func:`select_regions`. Every row
    carries ``region``, ``height``, ``width`` and the image's region count ``count``.
    """
    masks = [np.asarray(m, dtype=bool) for m in masks]
    for m in masks:
        if m.shape != (height, width):
            raise ValueError(f"mask shape {m.shape} differs from the image's {(height, width)}")
    regions = select_regions(masks, height, width, t, mode)
    total = height * width
    rows = [_row("global", np.ones((height, width), dtype=bool), total, total)]
    rows += [_row(kind, mask, area, authors) for kind, mask, area, authors in regions]
    for index, row in enumerate(rows):
        row.update(region=index, height=height, width=width, count=len(regions))
    return rows


def c_max(counts: Iterable[int]) -> int:
    """Dataset-level c_max: the largest region count of any image (0 for no image)."""
    return max((int(c) for c in counts), default=0)


def _image_problems(
    image: str, rows: Sequence[Mapping[str, Any]], threshold: Threshold, mode: str
) -> list[str]:
    problems: list[str] = []
    height, width = int(rows[0]["height"]), int(rows[0]["width"])
    first = rows[0]
    if first["kind"] != "global" or int(first["region"]) != 0:
        problems.append(f"{image}: row 0 is not the global region")
    elif tuple(int(first[k]) for k in ("x0", "y0", "x1", "y1")) != (0, 0, width, height):
        problems.append(f"{image}: the global region's bbox is not the whole image")
    covered = np.zeros((height, width), dtype=bool)
    unknown = sorted({str(row["kind"]) for row in rows} - set(schema.REGION_KINDS))
    if unknown:
        problems.append(f"{image}: unknown region kind(s) {unknown}")
    for row in rows[1:]:
        box = tuple(int(row[k]) for k in ("x0", "y0", "x1", "y1"))
        try:
            mask = rle.decode(json.loads(row["rle"]), height, width)
        except (ValueError, TypeError) as exc:
            problems.append(f"{image} region {row['region']}: bad rle ({exc})")
            continue
        covered |= mask
        if not (0 <= box[0] < box[2] <= width and 0 <= box[1] < box[3] <= height):
            problems.append(f"{image} region {row['region']}: bbox {box} not inside the image")
        elif rle.mask_bbox(mask) != box:
            problems.append(f"{image} region {row['region']}: bbox {box} is not the mask's box")
    if len(rows) - 1 != int(rows[0]["count"]):
        problems.append(f"{image}: count {rows[0]['count']} but {len(rows) - 1} regions")
    uncovered = int(height * width - np.count_nonzero(covered))
    has_complement = any(row["kind"] == "complement" for row in rows)
    t = threshold.for_image(height, width)
    # In correct mode every pixel is covered, except a complement dropped for being under t.
    if mode == "correct" and uncovered and (has_complement or uncovered >= t):
        problems.append(f"{image}: {uncovered} pixels covered by no region")
    return problems


def check_regions_table(
    frame: Any, threshold: Threshold = Threshold(), mode: str = "correct"
) -> list[str]:
    """Problems in a regions table (pandas DataFrame), one line each; empty when it is sound.

    Checks: row 0 of each image is ``global``; every kind is known; every region's bbox is
    non-empty, inside its image and the tight box of its mask; ``count`` matches the rows; and
    in ``correct`` mode the masks plus the complement cover every pixel (a complement smaller
    than t may be left out).
    """
    problems: list[str] = []
    for image, group in frame.groupby("image", sort=False):
        problems += _image_problems(str(image), group.to_dict("records"), threshold, mode)
    return problems
