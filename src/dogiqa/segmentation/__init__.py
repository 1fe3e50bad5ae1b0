"""Segmenters: turn an RGB image into candidate masks, which Algorithm 1 turns into regions.

Backends (``segment.backend`` in params.yaml), one entry each in :data:`SEGMENTERS`:
- ``classical``: scikit-image superpixels merged into a few regions (CPU, no weights; default);
- ``sam2``: Meta's SAM 2 automatic mask generator (the paper's configuration; needs a checkpoint).

Each backend module defines ``BACKEND`` (:class:`SegmenterBackend`): its params check, its
builder, the settings that change its masks (the segment cache's fingerprint) and the c_max that
``dogiqa score-image`` uses where no run has measured one.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from dogiqa import config
from dogiqa.errors import ParamError

SEGMENTERS: dict[str, str] = {
    "classical": "dogiqa.segmentation.classical",
    "sam2": "dogiqa.segmentation.sam2_backend",
}
"""``segment.backend`` -> the module that defines its ``BACKEND``."""
BACKENDS = tuple(SEGMENTERS)


class Segmenter(Protocol):
    name: str

    def masks(self, image: np.ndarray) -> list[np.ndarray]:
        """Bool masks (H x W each) of an H x W x 3 uint8 RGB image, in a deterministic order."""
        ...


@dataclass(frozen=True)
class SegmenterBackend:
    settings: Callable[[Mapping[str, Any]], Any]
    """Validated settings from the subsection ``segment.<backend>`` (ParamError names the
    param; no file is touched)."""
    build: Callable[[Any], Segmenter]
    """The segmenter from its settings (models load here, once)."""
    result_settings: Callable[[Mapping[str, Any]], dict[str, Any]] = dict
    """The part of the subsection that changes the masks (device, batch size excluded)."""
    default_c_max: Callable[[Any], tuple[int, str]] | None = None
    """c_max (s_seg = c * K / c_max) where no run has measured one (``dogiqa score-image``
    outside a project), from the settings: the value and where it comes from."""


def backend(name: str) -> SegmenterBackend:
    """The registered backend ``name`` (its module is imported here)."""
    return importlib.import_module(SEGMENTERS[name]).BACKEND


def subsection(section: Mapping[str, Any]) -> Mapping[str, Any]:
    """The subsection of the backend ``section`` (params ``segment``) selects."""
    name = config.get_choice(section, "segment", "backend", SEGMENTERS)
    sub = section.get(name)
    if not isinstance(sub, dict):
        raise ParamError(f"segment.{name}", "missing section (or not a mapping)")
    return sub


def backend_settings(section: Mapping[str, Any]) -> Any:
    """The validated settings of the backend that ``section`` (params ``segment``) selects."""
    sub = subsection(section)  # checks segment.backend first
    return backend(section["backend"]).settings(sub)


def default_c_max(section: Mapping[str, Any]) -> tuple[int, str] | None:
    """The chosen backend's c_max without a run (value, source), or None where it has none."""
    chosen = backend(config.get_choice(section, "segment", "backend", SEGMENTERS))
    if chosen.default_c_max is None:
        return None
    return chosen.default_c_max(chosen.settings(subsection(section)))


def build_segmenter(section: Mapping[str, Any]) -> Segmenter:
    """The segmenter configured by the params ``segment`` section (models load here, once)."""
    chosen = backend(section["backend"])
    return chosen.build(chosen.settings(subsection(section)))
