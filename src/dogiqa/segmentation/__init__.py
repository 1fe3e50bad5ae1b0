"""Segmenters: turn an RGB image into candidate masks, which Algorithm 1 turns into regions.

Backends (``segment.backend`` in params.yaml):
- ``classical``: scikit-image superpixels merged into a few regions (CPU, no weights; default);
- ``sam2``: Meta's SAM 2 automatic mask generator (the paper's configuration; needs a checkpoint).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

from dogiqa import config
from dogiqa.errors import ParamError

BACKENDS = ("classical", "sam2")


class Segmenter(Protocol):
    name: str

    def masks(self, image: np.ndarray) -> list[np.ndarray]:
        """Bool masks (H x W each) of an H x W x 3 uint8 RGB image, in a deterministic order."""
        ...


def backend_settings(section: Mapping[str, Any]) -> Any:
    """The validated settings of the backend that ``section`` (params ``segment``) selects."""
    backend = config.get_choice(section, "segment", "backend", BACKENDS)
    sub = section.get(backend)
    if not isinstance(sub, dict):
        raise ParamError(f"segment.{backend}", "missing section (or not a mapping)")
    if backend == "classical":
        from dogiqa.segmentation import classical

        return classical.settings_from(sub)
    from dogiqa.segmentation import sam2_backend

    return sam2_backend.settings_from(sub)


def build_segmenter(section: Mapping[str, Any]) -> Segmenter:
    """The segmenter configured by the params ``segment`` section (models load here, once)."""
    settings = backend_settings(section)
    if section["backend"] == "classical":
        from dogiqa.segmentation.classical import ClassicalSegmenter

        return ClassicalSegmenter(settings)
    from dogiqa.segmentation.sam2_backend import Sam2Segmenter

    return Sam2Segmenter(settings)
