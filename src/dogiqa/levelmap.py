"""The classical scorers' level map, apart from the scorers: a continuous metric value -> a level
position in [1, K] between the metric's data anchors (``resources/classical_anchors.yaml``).

The score stage maps each measured value with it (``dogiqa.scoring.classical``); the aggregate
stage maps the cached values again to other K (``aggregate.classical_K``) and reads the unclipped
position (``global_float``). It lives outside ``dogiqa.scoring`` so that those stages depend on
the map and the anchors, not on the metrics' or the MLLM backends' code.
"""

from __future__ import annotations

import math
from functools import cache
from importlib import resources
from typing import Any

import yaml

ANCHORS_FILE = "classical_anchors.yaml"
"""The level-map anchors in ``dogiqa.resources`` (``python -m dogiqa.scoring.anchors``)."""


@cache
def load_anchors() -> dict[str, dict[str, Any]]:
    """Per metric: ``best`` and ``worst`` (and how they were computed)."""
    text = (resources.files("dogiqa.resources") / ANCHORS_FILE).read_text(encoding="utf-8")
    return yaml.safe_load(text)["metrics"]


def position(score: float, best: float, worst: float, k: int, clip: bool = True) -> float:
    """The level position of ``score``: ``best`` is level K, ``worst`` level 1, linear between;
    clipped to [1, K] unless ``clip`` is False (a continuous score on the level scale)."""
    t = (worst - score) / (worst - best)
    return 1.0 + (k - 1) * (min(max(t, 0.0), 1.0) if clip else t)


def levels(score: float, metric: str, k: int) -> tuple[int, float]:
    """``(argmax, expected)`` of a metric value at K levels, as the score stage records them: the
    position spread over its two nearest levels (``dogiqa.scoring.base.from_position``), so
    ``expected`` is the position and ``argmax`` the nearest level (a tie goes to the lower); a
    value that is not finite is the fallback, level 1."""
    if not math.isfinite(score):
        return 1, 1.0
    anchor = load_anchors()[metric]
    pos = position(score, anchor["best"], anchor["worst"], k)
    low = min(int(math.floor(pos)), k - 1)
    return (low + 1 if pos - low > 0.5 else low), pos
