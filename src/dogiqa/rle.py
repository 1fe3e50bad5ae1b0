"""Uncompressed COCO run-length encoding of binary masks.

The mask is read in column-major (Fortran) order; ``counts`` alternates runs of False and True
pixels and always starts with a (possibly empty) run of False, as in pycocotools' uncompressed
RLE. The regions table stores ``counts`` as a JSON list.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def encode(mask: np.ndarray) -> list[int]:
    """Run lengths of ``mask`` (H x W, bool) in column-major order, starting with a 0-run."""
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    if flat.size == 0:
        return [0]
    # Positions where the value changes, plus both ends: consecutive differences are the runs.
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate(([0], changes, [flat.size]))
    runs = np.diff(bounds).tolist()
    if flat[0]:
        runs.insert(0, 0)
    return [int(r) for r in runs]


def decode(counts: Sequence[int], height: int, width: int) -> np.ndarray:
    """The H x W bool mask of uncompressed RLE ``counts``; raises ValueError on a size mismatch."""
    runs = np.asarray(counts, dtype=np.int64)
    if runs.ndim != 1 or (runs < 0).any():
        raise ValueError("RLE counts must be a flat list of non-negative integers")
    if int(runs.sum()) != height * width:
        raise ValueError(
            f"RLE counts sum to {int(runs.sum())}, expected {height}x{width}={height * width}"
        )
    values = np.arange(runs.size) % 2 == 1
    flat = np.repeat(values, runs)
    return flat.reshape((height, width), order="F")


def area(counts: Sequence[int]) -> int:
    """Number of True pixels (the sum of the odd runs)."""
    return int(sum(counts[1::2]))


def bbox(counts: Sequence[int], height: int, width: int) -> tuple[int, int, int, int]:
    """Tight half-open box ``(x0, y0, x1, y1)`` of the mask; ``(0, 0, 0, 0)`` when empty."""
    return mask_bbox(decode(counts, height, width))


def mask_bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Tight half-open box ``(x0, y0, x1, y1)`` of a bool mask; ``(0, 0, 0, 0)`` when empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return (0, 0, 0, 0)
    return (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)
