"""A classical CPU segmenter: scikit-image superpixels merged into a few coarse regions.

Felzenszwalb's graph segmentation (or SLIC) over-segments a downscaled copy of the image; the
superpixels are then merged greedily, always the adjacent pair with the smallest Ward cost
(size-weighted squared distance of their mean CIELAB colours), until at most ``max_regions``
remain, and further while the closest adjacent pair's colours differ by less than
``merge_threshold`` (CIE76 delta E). The result is a partition of the image into a handful of
regions of similar colour, a coarse stand-in for SAM's object masks that needs no weights. It is
deterministic: no randomness, and ties are broken by label order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from skimage.color import rgb2lab
from skimage.segmentation import felzenszwalb, slic
from skimage.transform import resize

from dogiqa import config
from dogiqa.segmentation import SegmenterBackend

METHODS = ("felzenszwalb", "slic")
PREFIX = "segment.classical"


@dataclass(frozen=True)
class ClassicalSettings:
    method: str = "felzenszwalb"
    work_size: int = 256
    scale: float = 100.0
    sigma: float = 0.8
    min_size: int = 50
    n_segments: int = 150
    compactness: float = 10.0
    max_regions: int = 10
    merge_threshold: float = 20.0


def settings_from(section: Mapping[str, Any]) -> ClassicalSettings:
    """Validated settings from the ``segment.classical`` params section."""
    return ClassicalSettings(
        method=config.get_choice(section, PREFIX, "method", METHODS),
        work_size=config.get_int(section, PREFIX, "work_size", minimum=0),
        scale=config.get_float(section, PREFIX, "scale", minimum=0.0),
        sigma=config.get_float(section, PREFIX, "sigma", minimum=0.0),
        min_size=config.get_int(section, PREFIX, "min_size", minimum=1),
        n_segments=config.get_int(section, PREFIX, "n_segments", minimum=1),
        compactness=config.get_float(section, PREFIX, "compactness", minimum=0.0),
        max_regions=config.get_int(section, PREFIX, "max_regions", minimum=1),
        merge_threshold=config.get_float(section, PREFIX, "merge_threshold", minimum=0.0),
    )


def _work_copy(image: np.ndarray, work_size: int) -> np.ndarray:
    """The image as floats in [0, 1], downscaled so its long side is at most ``work_size``."""
    height, width = image.shape[:2]
    scale = work_size / max(height, width) if work_size else 1.0
    if scale >= 1.0:
        return image.astype(np.float64) / 255.0
    shape = (max(1, round(height * scale)), max(1, round(width * scale)))
    return resize(image, shape, order=1, anti_aliasing=True, preserve_range=True) / 255.0


def _superpixels(work: np.ndarray, s: ClassicalSettings) -> np.ndarray:
    if s.method == "felzenszwalb":
        labels = felzenszwalb(work, scale=s.scale, sigma=s.sigma, min_size=s.min_size)
    else:
        labels = slic(
            work,
            n_segments=s.n_segments,
            compactness=s.compactness,
            sigma=s.sigma,
            start_label=0,
            enforce_connectivity=True,
        )
    _, dense = np.unique(labels, return_inverse=True)
    return dense.reshape(labels.shape)


def _adjacent_pairs(labels: np.ndarray, n: int) -> np.ndarray:
    """The pairs of 4-adjacent labels a < b, each once, as codes ``a * n + b`` in ascending
    order (the lexicographic order of the pairs)."""
    left = np.concatenate([labels[:, :-1].ravel(), labels[:-1, :].ravel()])
    right = np.concatenate([labels[:, 1:].ravel(), labels[1:, :].ravel()])
    return _pair_codes(left, right, n)


def _pair_codes(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    """Sorted unique codes ``min * n + max`` of the pairs (a[i], b[i]), self-pairs dropped."""
    keep = a != b
    low = np.minimum(a[keep], b[keep]).astype(np.int64)
    high = np.maximum(a[keep], b[keep]).astype(np.int64)
    return np.unique(low * n + high)


def merge_regions(
    labels: np.ndarray, lab: np.ndarray, max_regions: int, merge_threshold: float
) -> np.ndarray:
    """Greedy Ward merging of adjacent labels (0..n-1); returns dense labels of the merged map.

    Ties go to the first pair in (a, b) order. The edge list is kept as sorted integer codes
    and relabelled with array operations: one pass costs a few NumPy calls, not a Python loop
    over the edges.
    """
    n = int(labels.max()) + 1
    sizes = np.bincount(labels.ravel(), minlength=n).astype(np.float64)
    sums = np.stack(
        [np.bincount(labels.ravel(), weights=lab[..., c].ravel(), minlength=n) for c in range(3)],
        axis=1,
    )
    means = sums / sizes[:, None]
    codes = _adjacent_pairs(labels, n)
    parent = np.arange(n)
    alive = n
    while codes.size:
        a_idx, b_idx = np.divmod(codes, n)
        dist2 = ((means[a_idx] - means[b_idx]) ** 2).sum(axis=1)
        if alive > max_regions:
            weight = sizes[a_idx] * sizes[b_idx] / (sizes[a_idx] + sizes[b_idx])
            best = int(np.argmin(weight * dist2))
        else:
            best = int(np.argmin(dist2))
            if dist2[best] >= merge_threshold**2:
                break
        a, b = int(a_idx[best]), int(b_idx[best])
        means[a] = (means[a] * sizes[a] + means[b] * sizes[b]) / (sizes[a] + sizes[b])
        sizes[a] += sizes[b]
        parent[parent == b] = a
        alive -= 1
        # b's edges become a's; the pair (a, b) itself and any duplicates disappear.
        codes = _pair_codes(np.where(a_idx == b, a, a_idx), np.where(b_idx == b, a, b_idx), n)
    _, dense = np.unique(parent[labels], return_inverse=True)
    return dense.reshape(labels.shape)


def _upscale_labels(labels: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour upscaling of a label map to the image size."""
    rows = np.minimum((np.arange(height) + 0.5) * labels.shape[0] / height, labels.shape[0] - 1)
    cols = np.minimum((np.arange(width) + 0.5) * labels.shape[1] / width, labels.shape[1] - 1)
    return labels[rows.astype(np.intp)[:, None], cols.astype(np.intp)[None, :]]


class ClassicalSegmenter:
    """Superpixels + greedy merging; ``masks`` returns one disjoint mask per merged region."""

    name = "classical"

    def __init__(self, settings: ClassicalSettings) -> None:
        self.settings = settings

    def labels(self, image: np.ndarray) -> np.ndarray:
        """The merged label map (H x W, labels 0..n-1) of an RGB uint8 image."""
        height, width = image.shape[:2]
        work = _work_copy(image, self.settings.work_size)
        superpixels = _superpixels(work, self.settings)
        merged = merge_regions(
            superpixels, rgb2lab(work), self.settings.max_regions, self.settings.merge_threshold
        )
        return _upscale_labels(merged, height, width)

    def masks(self, image: np.ndarray) -> list[np.ndarray]:
        labels = self.labels(image)
        return [labels == k for k in range(int(labels.max()) + 1)]


def default_c_max(settings: ClassicalSettings) -> tuple[int, str]:
    """The merge stops at ``max_regions`` and the regions partition the image (no complement is
    left once all are kept), so no image has more: the dataset-wide c_max of a large set."""
    return settings.max_regions, f"{PREFIX}.max_regions, the most regions this segmenter gives"


BACKEND = SegmenterBackend(
    settings=settings_from, build=ClassicalSegmenter, default_c_max=default_c_max
)
